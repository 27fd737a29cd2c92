import Foundation
import XCTest
@testable import BackdoorCLI

final class ReportCommandTests: XCTestCase {
    private let fixtureRun = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/reports/run").path

    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "report-command-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testRebuildsTheReportOfARunFolder() throws {
        let run = try temporaryDirectory() + "/run"
        try FileManager.default.copyItem(atPath: fixtureRun, toPath: run)
        let command = try ReportCommand.parse([run])
        try command.run()
        let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        let markdown = try String(contentsOfFile: run + "/report.md", encoding: .utf8)
        XCTAssertTrue(html.contains("<h2 id=\"summary\">"))
        XCTAssertTrue(markdown.contains("| badnets | 81.43% | 99.62% | 80.48% | 2.51% |"), markdown)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/plots/badnets-pruning-by-threshold.svg"))
    }

    func testAbsentFolderIsAnErrorNamingIt() throws {
        let absent = try temporaryDirectory() + "/no-such-run"
        let command = try ReportCommand.parse([absent])
        XCTAssertThrowsError(try command.run()) { error in
            XCTAssertTrue(String(describing: error).contains("no-such-run: run folder does not exist"), "\(error)")
        }
        XCTAssertThrowsError(try ReportCommand.parse([]), "the run folder is required")
    }
}
