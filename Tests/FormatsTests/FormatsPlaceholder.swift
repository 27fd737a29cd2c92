import XCTest

// Tests of the Formats module land in this folder.
