"""The champion's endpoint (``mlchain model serve``): MLflow's scoring protocol with adaptive
micro-batching, Prometheus metrics and a background swap when the registry alias moves; and what
watches it (feedback, drift, retraining) through the :class:`~mlchain.serving.observer_api.Observer`
interface."""
