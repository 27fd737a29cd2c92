import Foundation
import XCTest
@testable import Reports

final class SVGTests: XCTestCase {
    func testNiceTicksCoverTheRangeInRoundSteps() {
        let (ticks, step) = niceTicks(lower: 0.013, upper: 0.87)
        XCTAssertEqual(step, 0.2, accuracy: 1e-12)
        XCTAssertEqual(ticks.first!, 0, accuracy: 1e-12)
        XCTAssertEqual(ticks.last!, 1, accuracy: 1e-12)
        let epochs = niceTicks(lower: 1, upper: 50, targetCount: 6)
        XCTAssertEqual(epochs.step, 10)
        XCTAssertEqual(epochs.ticks, [0, 10, 20, 30, 40, 50])
        // A single value still gets an axis.
        XCTAssertGreaterThan(niceTicks(lower: 3, upper: 3).ticks.count, 1)
        XCTAssertEqual(tickDecimals(0.05), 2)
        XCTAssertEqual(tickDecimals(20), 0)
    }

    func testLineChartDrawsEverySeriesAtItsCoordinates() {
        let chart = LineChart(title: "t", xLabel: "epoch", yLabel: "%", series: [
            .init(name: "clean", points: [(1, 0), (2, 50), (3, 100)]),
            .init(name: "asr", points: [(1, 100), (3, 0)], dashed: true),
            .init(name: "empty", points: []),
        ], yRange: 0...100)
        let svg = chart.svg
        XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        XCTAssertEqual(polylinePointCounts(svg), [3, 2])
        XCTAssertEqual(svg.components(separatedBy: "<circle class=\"point\"").count - 1, 5)
        // x ticks 1..3 map onto the plot area 64...540 (width 560); y 0...100 onto bottom...top.
        let points = captures("data-name=\"clean\" points=\"([^\"]*)\"", in: svg).first!.split(separator: " ")
        XCTAssertEqual(points.first, "64.0,274.0")
        XCTAssertEqual(points.last, "540.0,\(points.last!.split(separator: ",")[1])")
        let yTop = Double(points.last!.split(separator: ",")[1])!
        let yMiddle = Double(points[1].split(separator: ",")[1])!
        XCTAssertEqual(yMiddle, (274 + yTop) / 2, accuracy: 0.1)
        XCTAssertFalse(svg.contains(">empty<"), "a series without points has no legend entry")
        XCTAssertTrue(svg.contains("stroke-dasharray=\"6 4\""))
        XCTAssertEqual(svg, chart.svg, "rendering is deterministic")
    }

    func testEmptyChartSaysSo() {
        let svg = LineChart(title: "t", xLabel: "x", yLabel: "y", series: []).svg
        XCTAssertTrue(svg.contains("no data"))
        XCTAssertEqual(polylinePointCounts(svg), [])
    }

    func testHistogramCountsAndBars() {
        let grid = HistogramGrid(title: "masks", groups: [("a<b", [0, 0.02, 0.5, 0.99, 1, 1, 1]), ("c", [0.3])], marker: 0.2)
        XCTAssertEqual(grid.counts([0, 0.02, 0.049, 0.05, 0.5, 0.99, 1, 1.2, -0.1]),
                       [4, 1] + [Int](repeating: 0, count: 8) + [1] + [Int](repeating: 0, count: 8) + [3])
        let svg = grid.svg
        XCTAssertEqual(captures("<rect class=\"bar\" data-count=\"(\\d+)\"", in: svg), ["2", "1", "4", "1"])
        XCTAssertTrue(svg.contains("a&lt;b (7)"), "group names are escaped")
        XCTAssertEqual(svg.components(separatedBy: "class=\"marker\"").count - 1, 2)
    }

    func testBarChart() {
        let svg = BarChart(title: "pruned", valueLabel: "neurons", bars: [("layer4.0.bn1", 12), ("bn1", 0)]).svg
        XCTAssertEqual(captures("<rect class=\"bar\" data-value=\"(\\d+)\"", in: svg), ["12", "0"])
        XCTAssertTrue(svg.contains(">layer4.0.bn1</text>"))
    }

    func testEscapingAndFormatting() {
        XCTAssertEqual(xmlEscaped("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;")
        XCTAssertEqual(fixed(-0.0001, 2), "0.00")
        XCTAssertEqual(ReportBuilder.percent(0.9962), "99.62%")
        XCTAssertEqual(ReportBuilder.threshold(0.2), "0.20")
        XCTAssertEqual(ReportBuilder.threshold(0.225), "0.225")
        XCTAssertEqual(ReportBuilder.points(-0.0084), "-0.84 pt")
        XCTAssertEqual(ReportBuilder.duration(642.6), "643 s (10:43)")
    }
}
