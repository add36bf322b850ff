"""Where training runs. Each runner starts a trial and returns a handle with one interface."""
