import XCTest

// Tests of the Training module land in this folder.
