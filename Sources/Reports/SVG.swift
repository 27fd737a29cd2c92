import Foundation

// Small, dependency-free SVG charts. Output is a pure function of the input (fixed palette,
// fixed number formatting), so a report rebuilt from the same run folder is byte-identical.
// Data elements carry classes (`series`, `point`, `bar`) so tests can find them.

/// Escapes text for XML/HTML element content and attribute values.
public func xmlEscaped(_ text: String) -> String {
    var result = ""
    result.reserveCapacity(text.count)
    for character in text {
        switch character {
        case "&": result += "&amp;"
        case "<": result += "&lt;"
        case ">": result += "&gt;"
        case "\"": result += "&quot;"
        case "'": result += "&#39;"
        default: result.append(character)
        }
    }
    return result
}

/// Fixed-point text of a value with `decimals` digits, without a negative zero.
func fixed(_ value: Double, _ decimals: Int) -> String {
    let text = String(format: "%.\(decimals)f", value)
    if text.hasPrefix("-"), text.dropFirst().allSatisfy({ $0 == "0" || $0 == "." }) {
        return String(text.dropFirst())
    }
    return text
}

/// Coordinates in SVG text: one decimal is well below a pixel.
private func coordinate(_ value: Double) -> String { fixed(value, 1) }

/// Colour-blind-friendly palette (Okabe-Ito), in series order.
let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

/// Evenly spaced "nice" tick values (steps of 1, 2 or 5 times a power of ten) covering
/// `lower...upper`.
func niceTicks(lower: Double, upper: Double, targetCount: Int = 5) -> (ticks: [Double], step: Double) {
    var lower = lower, upper = upper
    if upper <= lower {
        let pad = lower == 0 ? 1 : abs(lower) * 0.1
        lower -= pad
        upper += pad
    }
    let rough = (upper - lower) / Double(max(targetCount, 1))
    let magnitude = pow(10, floor(log10(rough)))
    let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
    let first = floor(lower / step + 1e-9) * step
    let last = ceil(upper / step - 1e-9) * step
    let count = Int(((last - first) / step).rounded())
    return ((0...count).map { first + Double($0) * step }, step)
}

/// Decimals needed to print ticks `step` apart without losing digits.
func tickDecimals(_ step: Double) -> Int {
    var decimals = 0
    while decimals < 6, abs(step * pow(10, Double(decimals)) - (step * pow(10, Double(decimals))).rounded()) > 1e-6 {
        decimals += 1
    }
    return decimals
}

/// A rough width of `text` at `fontSize` (no font metrics available): enough for layout.
private func estimatedWidth(_ text: String, fontSize: Double) -> Double {
    Double(text.count) * fontSize * 0.58
}

private func svgOpen(width: Double, height: Double, label: String) -> String {
    """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
    viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="\(xmlEscaped(label))" \
    font-family="Helvetica, Arial, sans-serif" font-size="12">
    <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="#ffffff"/>

    """
}

private func text(_ content: String, x: Double, y: Double, anchor: String = "start", size: Double = 12,
                  weight: String? = nil, fill: String = "#222222", rotate: Bool = false) -> String {
    var attributes = "x=\"\(coordinate(x))\" y=\"\(coordinate(y))\" text-anchor=\"\(anchor)\" font-size=\"\(fixed(size, 0))\" fill=\"\(fill)\""
    if let weight { attributes += " font-weight=\"\(weight)\"" }
    if rotate { attributes += " transform=\"rotate(-90 \(coordinate(x)) \(coordinate(y)))\"" }
    return "<text \(attributes)>\(xmlEscaped(content))</text>\n"
}

/// A line chart of one or more series sharing x and y axes, with ticks, grid, axis labels and
/// a legend. Points of every series are also drawn as markers when there are few of them, so a
/// one-point series stays visible.
public struct LineChart {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var dashed: Bool

        public init(name: String, points: [(x: Double, y: Double)], dashed: Bool = false) {
            self.name = name
            self.points = points
            self.dashed = dashed
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// A fixed y range (e.g. 0...100 for percentages); nil fits the data.
    public var yRange: ClosedRange<Double>?
    /// A vertical marker line (e.g. the chosen threshold) with its label.
    public var marker: (x: Double, label: String)?
    /// Two charts fit side by side in the report's 1200-pixel column.
    public var width: Double = 560
    public var height: Double = 320

    public init(title: String, xLabel: String, yLabel: String, series: [Series],
                yRange: ClosedRange<Double>? = nil, marker: (x: Double, label: String)? = nil) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.yRange = yRange
        self.marker = marker
    }

    public var svg: String {
        let drawn = series.filter { !$0.points.isEmpty }
        var out = svgOpen(width: width, height: height, label: title)
        out += text(title, x: width / 2, y: 20, anchor: "middle", size: 14, weight: "bold")

        // Legend rows under the title, wrapped to the chart width.
        var legend = ""
        var legendX = 64.0, legendY = 40.0
        for (index, item) in series.enumerated() where !item.points.isEmpty {
            let itemWidth = 28 + estimatedWidth(item.name, fontSize: 12) + 18
            if legendX + itemWidth > width - 10, legendX > 64 {
                legendX = 64
                legendY += 18
            }
            let color = palette[index % palette.count]
            legend += "<line x1=\"\(coordinate(legendX))\" y1=\"\(coordinate(legendY - 4))\" x2=\"\(coordinate(legendX + 22))\" y2=\"\(coordinate(legendY - 4))\" stroke=\"\(color)\" stroke-width=\"2.5\"\(item.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            legend += text(item.name, x: legendX + 28, y: legendY)
            legendX += itemWidth
        }
        out += legend

        let left = 64.0, right = width - 20
        let top = legendY + 14, bottom = height - 46
        out += "<rect x=\"\(coordinate(left))\" y=\"\(coordinate(top))\" width=\"\(coordinate(right - left))\" height=\"\(coordinate(bottom - top))\" fill=\"none\" stroke=\"#999999\"/>\n"
        out += text(xLabel, x: (left + right) / 2, y: height - 10, anchor: "middle")
        out += text(yLabel, x: 16, y: (top + bottom) / 2, anchor: "middle", rotate: true)

        let allPoints = drawn.flatMap(\.points)
        guard !allPoints.isEmpty else {
            out += text("no data", x: (left + right) / 2, y: (top + bottom) / 2, anchor: "middle", fill: "#888888")
            return out + "</svg>\n"
        }

        var xs = allPoints.map(\.x)
        if let marker { xs.append(marker.x) }
        let (xTicks, xStep) = niceTicks(lower: xs.min()!, upper: xs.max()!, targetCount: 6)
        let xLower = xTicks.first!, xUpper = xTicks.last!
        let yTicks: [Double], yStep: Double
        if let yRange {
            (yTicks, yStep) = niceTicks(lower: yRange.lowerBound, upper: yRange.upperBound)
        } else {
            let ys = allPoints.map(\.y)
            (yTicks, yStep) = niceTicks(lower: ys.min()!, upper: ys.max()!)
        }
        let yLower = yTicks.first!, yUpper = yTicks.last!
        func px(_ x: Double) -> Double { left + (x - xLower) / (xUpper - xLower) * (right - left) }
        func py(_ y: Double) -> Double { bottom - (y - yLower) / (yUpper - yLower) * (bottom - top) }

        let xDecimals = tickDecimals(xStep), yDecimals = tickDecimals(yStep)
        for tick in xTicks {
            let x = px(tick)
            out += "<line x1=\"\(coordinate(x))\" y1=\"\(coordinate(top))\" x2=\"\(coordinate(x))\" y2=\"\(coordinate(bottom + 4))\" stroke=\"#e4e4e4\"/>\n"
            out += text(fixed(tick, xDecimals), x: x, y: bottom + 17, anchor: "middle", size: 11, fill: "#444444")
        }
        for tick in yTicks {
            let y = py(tick)
            out += "<line x1=\"\(coordinate(left - 4))\" y1=\"\(coordinate(y))\" x2=\"\(coordinate(right))\" y2=\"\(coordinate(y))\" stroke=\"#e4e4e4\"/>\n"
            out += text(fixed(tick, yDecimals), x: left - 7, y: y + 4, anchor: "end", size: 11, fill: "#444444")
        }
        if let marker {
            let x = px(marker.x)
            out += "<line class=\"marker\" x1=\"\(coordinate(x))\" y1=\"\(coordinate(top))\" x2=\"\(coordinate(x))\" y2=\"\(coordinate(bottom))\" stroke=\"#666666\" stroke-dasharray=\"3 3\"/>\n"
            out += text(marker.label, x: x + 4, y: top + 14, size: 11, fill: "#444444")
        }
        for (index, item) in series.enumerated() where !item.points.isEmpty {
            let color = palette[index % palette.count]
            let points = item.points.map { "\(coordinate(px($0.x))),\(coordinate(py($0.y)))" }.joined(separator: " ")
            out += "<polyline class=\"series\" data-name=\"\(xmlEscaped(item.name))\" points=\"\(points)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-linejoin=\"round\"\(item.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            if item.points.count <= 40 {
                for point in item.points {
                    out += "<circle class=\"point\" cx=\"\(coordinate(px(point.x)))\" cy=\"\(coordinate(py(point.y)))\" r=\"2.8\" fill=\"\(color)\"/>\n"
                }
            }
        }
        return out + "</svg>\n"
    }
}

/// Histograms of values in [0, 1], one small panel per group (e.g. ANP mask values per BN
/// layer), on a shared logarithmic count axis so a few low-mask neurons stay visible next to
/// hundreds near 1.
public struct HistogramGrid {
    public var title: String
    public var groups: [(name: String, values: [Double])]
    public var bins: Int = 20
    public var columns: Int = 4
    /// A vertical marker at this value in every panel (e.g. the pruning threshold).
    public var marker: Double?

    public init(title: String, groups: [(name: String, values: [Double])], marker: Double? = nil) {
        self.title = title
        self.groups = groups
        self.marker = marker
    }

    /// Counts per bin of width 1/bins over [0, 1]; values outside are clamped into the ends.
    public func counts(_ values: [Double]) -> [Int] {
        var counts = [Int](repeating: 0, count: bins)
        for value in values {
            let index = Int((min(max(value, 0), 1) * Double(bins)).rounded(.down))
            counts[min(index, bins - 1)] += 1
        }
        return counts
    }

    public var svg: String {
        let panelWidth = 232.0, panelHeight = 132.0, gap = 12.0
        let width = Double(columns) * (panelWidth + gap) + gap
        let rows = max((groups.count + columns - 1) / columns, 1)
        let height = 56 + Double(rows) * (panelHeight + gap)
        var out = svgOpen(width: width, height: height, label: title)
        out += text(title, x: width / 2, y: 20, anchor: "middle", size: 14, weight: "bold")
        out += text("x: mask value (0 to 1, \(bins) bins); y: neurons, log scale" + (marker.map { "; dashed: threshold \(fixed($0, 2))" } ?? ""),
                    x: width / 2, y: 38, anchor: "middle", size: 11, fill: "#555555")
        guard !groups.isEmpty else {
            out += text("no data", x: width / 2, y: 80, anchor: "middle", fill: "#888888")
            return out + "</svg>\n"
        }
        let allCounts = groups.map { counts($0.values) }
        let maxCount = max(allCounts.flatMap { $0 }.max() ?? 1, 1)
        // Decades shown on the count axis: 1, 10, 100, ... up to the largest count.
        let decades = Int(floor(log10(Double(maxCount)))) + 1
        let scaleTop = log10(pow(10, Double(decades)) + 1)
        for (index, group) in groups.enumerated() {
            let x0 = gap + Double(index % columns) * (panelWidth + gap)
            let y0 = 52 + Double(index / columns) * (panelHeight + gap)
            let left = x0 + 34, right = x0 + panelWidth - 6
            let top = y0 + 20, bottom = y0 + panelHeight - 18
            out += text("\(group.name) (\(group.values.count))", x: x0 + panelWidth / 2, y: y0 + 12, anchor: "middle", size: 11, weight: "bold")
            out += "<rect x=\"\(coordinate(left))\" y=\"\(coordinate(top))\" width=\"\(coordinate(right - left))\" height=\"\(coordinate(bottom - top))\" fill=\"none\" stroke=\"#bbbbbb\"/>\n"
            func py(_ count: Double) -> Double { bottom - log10(count + 1) / scaleTop * (bottom - top) }
            for decade in 0..<decades + 1 {
                let value = pow(10, Double(decade))
                let y = py(value)
                out += "<line x1=\"\(coordinate(left - 3))\" y1=\"\(coordinate(y))\" x2=\"\(coordinate(right))\" y2=\"\(coordinate(y))\" stroke=\"#eeeeee\"/>\n"
                out += text(fixed(value, 0), x: left - 5, y: y + 3, anchor: "end", size: 9, fill: "#555555")
            }
            for tick in [0.0, 0.5, 1.0] {
                let x = left + tick * (right - left)
                out += text(fixed(tick, 1), x: x, y: bottom + 12, anchor: "middle", size: 9, fill: "#555555")
            }
            let binWidth = (right - left) / Double(bins)
            for (bin, count) in allCounts[index].enumerated() where count > 0 {
                let y = py(Double(count))
                out += "<rect class=\"bar\" data-count=\"\(count)\" x=\"\(coordinate(left + Double(bin) * binWidth + 0.5))\" y=\"\(coordinate(y))\" width=\"\(coordinate(binWidth - 1))\" height=\"\(coordinate(bottom - y))\" fill=\"\(palette[0])\"/>\n"
            }
            if let marker {
                let x = left + min(max(marker, 0), 1) * (right - left)
                out += "<line class=\"marker\" x1=\"\(coordinate(x))\" y1=\"\(coordinate(top))\" x2=\"\(coordinate(x))\" y2=\"\(coordinate(bottom))\" stroke=\"\(palette[1])\" stroke-dasharray=\"3 2\"/>\n"
            }
        }
        return out + "</svg>\n"
    }
}

/// Horizontal bars with a label per row and the value printed at the bar's end.
public struct BarChart {
    public var title: String
    public var valueLabel: String
    public var bars: [(label: String, value: Double)]
    public var decimals: Int = 0
    public var width: Double = 640

    public init(title: String, valueLabel: String, bars: [(label: String, value: Double)], decimals: Int = 0) {
        self.title = title
        self.valueLabel = valueLabel
        self.bars = bars
        self.decimals = decimals
    }

    public var svg: String {
        let rowHeight = 18.0
        let labelWidth = min(max(bars.map { estimatedWidth($0.label, fontSize: 11) }.max() ?? 40, 40), 220) + 14
        let top = 36.0
        let height = top + Double(max(bars.count, 1)) * rowHeight + 40
        var out = svgOpen(width: width, height: height, label: title)
        out += text(title, x: width / 2, y: 20, anchor: "middle", size: 14, weight: "bold")
        guard !bars.isEmpty else {
            out += text("no data", x: width / 2, y: top + 14, anchor: "middle", fill: "#888888")
            return out + "</svg>\n"
        }
        let left = labelWidth, right = width - 56
        let bottom = top + Double(bars.count) * rowHeight
        let (ticks, step) = niceTicks(lower: 0, upper: max(bars.map(\.value).max() ?? 1, 1e-9))
        let upper = ticks.last!
        func px(_ value: Double) -> Double { left + value / upper * (right - left) }
        for tick in ticks {
            let x = px(tick)
            out += "<line x1=\"\(coordinate(x))\" y1=\"\(coordinate(top))\" x2=\"\(coordinate(x))\" y2=\"\(coordinate(bottom + 4))\" stroke=\"#e4e4e4\"/>\n"
            out += text(fixed(tick, tickDecimals(step)), x: x, y: bottom + 16, anchor: "middle", size: 10, fill: "#444444")
        }
        out += text(valueLabel, x: (left + right) / 2, y: bottom + 32, anchor: "middle", size: 11)
        for (index, bar) in bars.enumerated() {
            let y = top + Double(index) * rowHeight
            out += text(bar.label, x: left - 6, y: y + 13, anchor: "end", size: 11)
            out += "<rect class=\"bar\" data-value=\"\(fixed(bar.value, decimals))\" x=\"\(coordinate(left))\" y=\"\(coordinate(y + 3))\" width=\"\(coordinate(max(px(bar.value) - left, 0)))\" height=\"\(coordinate(rowHeight - 6))\" fill=\"\(palette[0])\"/>\n"
            out += text(fixed(bar.value, decimals), x: px(bar.value) + 4, y: y + 13, size: 10, fill: "#444444")
        }
        return out + "</svg>\n"
    }
}
