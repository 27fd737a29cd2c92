import XCTest

// Tests of the Defenses module land in this folder.
