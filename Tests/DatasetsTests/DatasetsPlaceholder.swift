import XCTest

// Tests of the Datasets module land in this folder.
