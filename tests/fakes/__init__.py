"""Stand-ins (FAKES) for external systems used by the tests: a Jenkins controller, the Job DSL API."""
