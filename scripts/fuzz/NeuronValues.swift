// MaskFile.swift alone, outside the Defenses module (whose other files need oneDNN), needs
// this one type of its module.
public typealias NeuronValues = [[Float]]
