"""The local engine: runs jobs/ (JJB YAML) with Jenkins' semantics on one machine."""
