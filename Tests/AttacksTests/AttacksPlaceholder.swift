import XCTest

// Tests of the Attacks module land in this folder.
