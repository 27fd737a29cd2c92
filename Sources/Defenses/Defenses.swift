// Defenses module.
