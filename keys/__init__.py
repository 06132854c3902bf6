"""Actor key pairs and the node secret that encrypts them at rest."""
