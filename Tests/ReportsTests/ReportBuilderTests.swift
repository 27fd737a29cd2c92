import Foundation
import XCTest
@testable import Reports

/// The whole report on the recorded fixture run folder, and on damaged copies of it.
final class ReportBuilderTests: XCTestCase {
    func testEverySectionIsPresentInBothFormats() throws {
        let report = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        XCTAssertEqual(report.problems, [])
        for section in ReportBuilder.Section.allCases {
            let (anchor, title) = (section.rawValue, section.title)
            XCTAssertTrue(report.html.contains("<h2 id=\"\(anchor)\">\(title)</h2>"), anchor)
            XCTAssertTrue(report.html.contains("<a href=\"#\(anchor)\">"), "navigation link to \(anchor)")
            XCTAssertTrue(report.markdown.contains("\n## \(title)\n"), title)
        }
        for attack in ["badnets", "blend"] {
            XCTAssertEqual(report.html.components(separatedBy: "<h3>\(attack)</h3>").count - 1, 4,
                           "\(attack) has a subsection in training, samples, masks and pruning")
        }
        XCTAssertFalse(report.html.contains("class=\"note\""), "a complete run folder has no notes")
    }

    func testEveryPlotHasItsData() throws {
        let report = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        let names = Set(report.plots.map(\.fileName))
        let expected = ["training-accuracy", "training-loss", "mask-histograms", "pruned-per-layer", "anp-accuracy",
                        "anp-loss", "pruning-by-threshold", "pruning-by-number"]
        XCTAssertEqual(names, Set(["badnets", "blend"].flatMap { attack in expected.map { "\(attack)-\($0).svg" } }
            + ["sweep-asr.svg", "sweep-clean-accuracy.svg"]))
        XCTAssertEqual(names.count, report.plots.count, "plot file names are unique")
        for plot in report.plots {
            let polylines = polylinePointCounts(plot.svg)
            let bars = plot.svg.components(separatedBy: "class=\"bar\"").count - 1
            XCTAssertTrue(polylines.contains { $0 >= 2 } || bars > 0, "\(plot.fileName) draws no data")
            XCTAssertFalse(plot.svg.contains("no data"), plot.fileName)
            XCTAssertTrue(report.html.contains(plot.svg), "\(plot.fileName) is inlined in the HTML")
            XCTAssertTrue(report.markdown.contains("](plots/\(plot.fileName))"), "\(plot.fileName) is linked from the Markdown")
        }
        func plot(_ name: String) throws -> String { try XCTUnwrap(report.plots.first { $0.fileName == name }).svg }
        // One point per epoch, logged ANP iteration, pruning row; one line per alpha.
        XCTAssertEqual(polylinePointCounts(try plot("badnets-training-accuracy.svg")), [12, 12, 12])
        XCTAssertEqual(polylinePointCounts(try plot("blend-anp-loss.svg")), [10, 10, 10])
        XCTAssertEqual(polylinePointCounts(try plot("badnets-pruning-by-threshold.svg")), [19, 19])
        XCTAssertEqual(polylinePointCounts(try plot("blend-pruning-by-number.svg")), [20, 20])
        XCTAssertEqual(polylinePointCounts(try plot("sweep-asr.svg")), [5, 5, 5, 5])
        // Histogram bars count every neuron; the per-layer bars add up to the pruned neurons.
        let counts = captures("data-count=\"(\\d+)\"", in: try plot("badnets-mask-histograms.svg")).compactMap { Int($0) }
        XCTAssertEqual(counts.reduce(0, +), 1200)
        let pruned = captures("data-value=\"(\\d+)\"", in: try plot("badnets-pruned-per-layer.svg")).compactMap { Int($0) }
        XCTAssertEqual(pruned.count, 20)
        XCTAssertEqual(pruned.reduce(0, +), 23)
    }

    func testSummaryTableEqualsTheJSON() throws {
        let report = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        let json = try ReportFixtures.summaryJSON()
        let rows = htmlTableRows(id: "summary-table", in: report.html)
        XCTAssertEqual(rows.map { $0.first }, ["badnets", "blend"])
        for row in rows {
            let attack = try XCTUnwrap(json[row[0]])
            XCTAssertEqual(row.count, ReportBuilder.summaryHeaders.count)
            func fraction(_ cell: String) throws -> Double {
                XCTAssertTrue(cell.hasSuffix("%"), cell)
                return try XCTUnwrap(Double(cell.dropLast())) / 100
            }
            for (column, key) in [(1, "clean_acc_before"), (2, "asr_before"), (3, "clean_acc_after"), (4, "asr_after")] {
                XCTAssertEqual(try fraction(row[column]), try XCTUnwrap(attack[key]), accuracy: 5e-7, "\(row[0]) \(key)")
            }
            XCTAssertEqual(Double(row[6]), attack["threshold"])
            XCTAssertEqual(Double(row[7]), attack["pruned_neurons"])
            XCTAssertTrue(row[8].hasPrefix("\(Int(attack["seconds"]!.rounded())) s"), row[8])
            let change = try XCTUnwrap(Double(row[5].replacingOccurrences(of: " pt", with: "")))
            XCTAssertEqual(change / 100, attack["clean_acc_after"]! - attack["clean_acc_before"]!, accuracy: 5e-5)
            // The Markdown row carries the same cells.
            XCTAssertTrue(report.markdown.contains("| " + row.joined(separator: " | ") + " |"), row[0])
        }
    }

    func testSweepAndTimingTables() throws {
        let report = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        let sweep = htmlTableRows(id: "sweep-table", in: report.html)
        XCTAssertEqual(sweep.count, 20)
        XCTAssertEqual(sweep.first, ["0.10", "0.10", "79.60%", "25.64%", "29"])
        let timings = htmlTableRows(id: "timings-table", in: report.html)
        // Training time: the sum of the 12 per-epoch times of badnets/train/train_log.jsonl.
        let log = try LogFile.loadTraining(path: ReportFixtures.run + "/badnets/train/train_log.jsonl")
        let seconds = log.compactMap(\.seconds).reduce(0, +)
        XCTAssertEqual(timings.first?.prefix(3), ["badnets", "12", "\(Int(seconds.rounded())) s (\(Int(seconds.rounded()) / 60):\(String(format: "%02d", Int(seconds.rounded()) % 60)))"])
    }

    func testHTMLIsSelfContained() throws {
        let report = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        let html = report.html
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertTrue(html.contains("<style>"))
        XCTAssertFalse(html.contains("<link"))
        XCTAssertFalse(html.contains("<script"))
        // Every src is a data URI; the only URLs are the SVG namespace.
        XCTAssertEqual(Set(captures("src=\"([a-z]+):", in: html)), ["data"])
        XCTAssertEqual(Set(captures("(https?://[^\"]*)", in: html)), ["http://www.w3.org/2000/svg"])
        // The sample images are embedded byte for byte.
        for attack in ["badnets", "blend"] {
            let png = try Data(contentsOf: URL(fileURLWithPath: ReportFixtures.run + "/\(attack)/train/samples.png"))
            XCTAssertTrue(html.contains("data:image/png;base64,\(png.base64EncodedString())\""), attack)
            XCTAssertTrue(report.markdown.contains("](\(attack)/train/samples.png)"), attack)
        }
        XCTAssertTrue(html.contains("&quot;anp_eps&quot; : 0.4"), "configuration is shown (escaped)")
    }

    func testBuildIsDeterministic() throws {
        let first = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        let second = try ReportBuilder.build(runDirectory: ReportFixtures.run)
        XCTAssertEqual(first.html, second.html)
        XCTAssertEqual(first.markdown, second.markdown)
    }

    func testWriteProducesTheFilesAndRemovesStalePlots() throws {
        let run = try ReportFixtures.copyOfRun(self)
        try write("<svg/>", to: run + "/plots/old-attack-training-loss.svg")
        let written = try ReportBuilder.write(runDirectory: run)
        XCTAssertEqual(written.htmlPath, run + "/report.html")
        XCTAssertEqual(written.markdownPath, run + "/report.md")
        let built = try ReportBuilder.build(runDirectory: run)
        XCTAssertEqual(try String(contentsOfFile: written.htmlPath, encoding: .utf8), built.html)
        XCTAssertEqual(try String(contentsOfFile: written.markdownPath, encoding: .utf8), built.markdown)
        let plotFiles = try FileManager.default.contentsOfDirectory(atPath: run + "/plots").sorted()
        XCTAssertEqual(plotFiles, built.plots.map(\.fileName).sorted())
        for plot in built.plots {
            XCTAssertEqual(try String(contentsOfFile: run + "/plots/" + plot.fileName, encoding: .utf8), plot.svg)
        }
        // No temporary files are left behind.
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: run).contains { $0.hasPrefix(".") })
    }

    func testMissingPiecesBecomeNotes() throws {
        let run = try ReportFixtures.copyOfRun(self)
        let manager = FileManager.default
        try manager.removeItem(atPath: run + "/summary.json")
        try manager.removeItem(atPath: run + "/sweep")
        try manager.removeItem(atPath: run + "/badnets/anp")
        try manager.removeItem(atPath: run + "/badnets/train/samples.png")
        try manager.removeItem(atPath: run + "/blend/prune/pruning_by_number.txt")
        let report = try ReportBuilder.build(runDirectory: run)
        XCTAssertEqual(report.problems, [
            "Missing: summary.json",
            "Missing: badnets/train/samples.png",
            "Missing: badnets/anp/mask_values.txt",
            "Missing: badnets/anp/anp_log.jsonl",
            "Missing: blend/prune/pruning_by_number.txt",
            "Missing: sweep/sweep.json (run `backdoor sweep` to fill this section)",
        ], "each problem once, in report order")
        for anchor in ReportBuilder.Section.allCases.map(\.rawValue) {
            XCTAssertTrue(report.html.contains("<h2 id=\"\(anchor)\">"), anchor)
        }
        // What is there is still drawn: attacks are found from their folders.
        let names = Set(report.plots.map(\.fileName))
        XCTAssertTrue(names.isSuperset(of: ["badnets-training-accuracy.svg", "badnets-pruning-by-threshold.svg",
                                            "blend-mask-histograms.svg", "blend-pruning-by-threshold.svg"]))
        XCTAssertFalse(names.contains("badnets-mask-histograms.svg"))
        XCTAssertTrue(report.markdown.contains("> **Missing: badnets/anp/mask_values.txt**"))
        XCTAssertEqual(htmlTableRows(id: "timings-table", in: report.html).map { $0.last }, ["missing", "missing"])
        // Without summary.json the summary comes from the stage files.
        XCTAssertEqual(htmlTableRows(id: "summary-table", in: report.html), [
            ["badnets", "81.43%", "99.62%", "80.48%", "2.51%", "-0.95 pt", "0.20", "23", "-"],
            ["blend", "80.79%", "97.17%", "79.54%", "2.29%", "-1.25 pt", "0.20", "31", "-"],
        ])
    }

    func testUnreadableFilesBecomeNotesNamingFileAndLine() throws {
        let run = try ReportFixtures.copyOfRun(self)
        try write("{\"epoch\": 1, \"clean_acc\": 0.4}\n{\"epoch\": 2, \"clean_acc\": [1]}\n", to: run + "/blend/train/train_log.jsonl")
        try write("{\"attacks\": 3}", to: run + "/summary.json")
        let report = try ReportBuilder.build(runDirectory: run)
        XCTAssertTrue(report.problems.contains("Could not read blend/train/train_log.jsonl: line 2: \"clean_acc\" should be a number, found an array"),
                      "\(report.problems)")
        XCTAssertTrue(report.problems.contains("Could not read summary.json: \"attacks\" should be an object, found a number"),
                      "\(report.problems)")
        XCTAssertTrue(report.html.contains("<p class=\"note\">Could not read blend/train/train_log.jsonl: line 2:"))
        // Attacks are still found from their folders, in the runner's order.
        XCTAssertTrue(report.html.contains("<h3>badnets</h3>"))
    }

    func testEmptyAndAbsentFolders() throws {
        let empty = try ReportFixtures.temporaryDirectory(self)
        let report = try ReportBuilder.build(runDirectory: empty)
        for anchor in ReportBuilder.Section.allCases.map(\.rawValue) {
            XCTAssertTrue(report.html.contains("<h2 id=\"\(anchor)\">"), anchor)
        }
        XCTAssertTrue(report.plots.isEmpty)
        XCTAssertTrue(report.problems.contains("Missing: no attack folders (<attack>/train, anp, prune) in this run folder"))
        assertThrows(try ReportBuilder.build(runDirectory: empty + "/nothing-here"),
                     mentioning: ["nothing-here", "run folder does not exist"])
        try write("x", to: empty + "/file")
        assertThrows(try ReportBuilder.build(runDirectory: empty + "/file"), mentioning: ["file", "is not a folder"])
    }

    func testLongPruningTablesAreThinned() throws {
        let rows = Array(0..<4800)
        let shown = ReportBuilder.thinned(rows, limit: 200)
        XCTAssertEqual(shown.count, 200)
        XCTAssertEqual(shown.first, 0)
        XCTAssertEqual(shown.last, 4799)
        XCTAssertEqual(Set(shown).count, 200)
        XCTAssertEqual(ReportBuilder.thinned([1, 2, 3], limit: 200), [1, 2, 3])
    }

    /// An attack the runner does not know, with only a training log, sorts after the known ones.
    func testExtraAttackFolder() throws {
        let run = try ReportFixtures.copyOfRun(self)
        try FileManager.default.copyItem(atPath: run + "/badnets/train", toPath: run + "/wanet/train")
        let folder = try RunFolder.load(directory: run)
        XCTAssertEqual(folder.attacks.map(\.name), ["badnets", "blend", "wanet"])
        let report = try ReportBuilder.build(runDirectory: run)
        XCTAssertTrue(report.problems.contains("Missing: wanet/anp/mask_values.txt"))
        XCTAssertTrue(report.plots.contains { $0.fileName == "wanet-training-accuracy.svg" })
    }

    /// Issue 12, case 11: report.md embedded raw HTML from summary.json values and folder names
    /// (report.html and the SVGs escaped already); both must show it as text.
    func testMarkdownEscapesHTMLFromTheRunFolder() throws {
        let run = try ReportFixtures.copyOfRun(self)
        let summaryPath = run + "/summary.json"
        var summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: summaryPath))) as? [String: Any])
        summary["preset"] = "<script>alert(1)</script>"
        try JSONSerialization.data(withJSONObject: summary).write(to: URL(fileURLWithPath: summaryPath))
        let folder = "<img src=x onerror=alert(2)>"
        try FileManager.default.createDirectory(atPath: "\(run)/\(folder)/train", withIntermediateDirectories: true)
        let report = try ReportBuilder.build(runDirectory: run)
        for html in ["<script", "<img src=x"] {
            XCTAssertFalse(report.markdown.lowercased().contains(html), "report.md holds raw \(html)")
            XCTAssertFalse(report.html.lowercased().contains(html), "report.html holds raw \(html)")
        }
        XCTAssertTrue(report.markdown.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), report.markdown)
        XCTAssertTrue(report.markdown.contains("&lt;img src=x onerror=alert(2)&gt;"), report.markdown)
    }

    func testMarkdownTextEscapesLinksAndFences() {
        XCTAssertEqual(ReportDocument.markdownText("[x](javascript:1) a&b `c` \\"), "\\[x\\](javascript:1) a&amp;b \\`c\\` \\\\")
        var document = ReportDocument(title: "t")
        document.blocks = [.code("```\n<b>", language: "json")]
        XCTAssertTrue(document.markdown(plotsFolder: "plots").contains("````json\n```\n<b>\n````\n"))
    }
}

