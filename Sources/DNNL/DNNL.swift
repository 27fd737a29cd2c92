// DNNL module.
