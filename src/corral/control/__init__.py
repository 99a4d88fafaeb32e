"""The control plane: the reconcile loop that turns stored jobs into scheduling decisions, and back."""
