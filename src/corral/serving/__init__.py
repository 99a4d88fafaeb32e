"""Model serving: services whose replicas are corral jobs, the gateway, the autoscaler and rollouts (docs/serving.md)."""
