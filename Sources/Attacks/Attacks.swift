// Attacks module.
