import XCTest

// Tests of the Reports module land in this folder.
