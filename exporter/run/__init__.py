"""One export, a batch of new uploads or a fleet: the stages below driven in order."""
