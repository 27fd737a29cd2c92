// NN module.
