"""The Kubernetes backend: a cluster's GPU nodes become corral nodes, corral's placements run as Pods."""
