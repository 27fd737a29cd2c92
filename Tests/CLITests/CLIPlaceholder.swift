import XCTest

// Tests of the CLI module land in this folder.
