import XCTest

// Tests of the NN module land in this folder.
