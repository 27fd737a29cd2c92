import Foundation
import Support

/// leaderboard.json and leaderboard.csv of an attack x defense matrix: one row per attack x
/// defense x model, means and (sample) standard deviations over seeds. One schema, written by the
/// runner and read by the report.
public struct Leaderboard: Codable, Equatable {
    /// One defense run on one trained model (one seed), from that defense stage's result.json.
    public struct Cell: Codable, Equatable {
        public var attack, defense, model: String
        public var seed: UInt64
        public var cleanBefore, asrBefore, cleanAfter, asrAfter: Double
        public var robustBefore, robustAfter: Double?
        public var seconds: Double
        /// The defense stage's folder, relative to the run folder.
        public var folder: String

        public init(attack: String, defense: String, model: String, seed: UInt64, cleanBefore: Double, asrBefore: Double,
                    cleanAfter: Double, asrAfter: Double, robustBefore: Double?, robustAfter: Double?, seconds: Double,
                    folder: String) {
            self.attack = attack
            self.defense = defense
            self.model = model
            self.seed = seed
            self.cleanBefore = cleanBefore
            self.asrBefore = asrBefore
            self.cleanAfter = cleanAfter
            self.asrAfter = asrAfter
            self.robustBefore = robustBefore
            self.robustAfter = robustAfter
            self.seconds = seconds
            self.folder = folder
        }

        /// BackdoorBench's defense effectiveness rating: (max(0, ASR drop) - max(0, accuracy drop) + 1) / 2.
        public var der: Double { Leaderboard.der(asrBefore: asrBefore, asrAfter: asrAfter, accBefore: cleanBefore, accAfter: cleanAfter) }

        enum CodingKeys: String, CodingKey {
            case attack, defense, model, seed, seconds, folder
            case cleanBefore = "clean_acc_before", asrBefore = "asr_before", cleanAfter = "clean_acc_after", asrAfter = "asr_after"
            case robustBefore = "robust_acc_before", robustAfter = "robust_acc_after"
        }
    }

    public struct Statistic: Codable, Equatable {
        public var mean: Double
        /// Sample standard deviation (n - 1); 0 for one seed.
        public var std: Double

        public init(_ values: [Double]) {
            mean = values.reduce(0, +) / Double(values.count)
            let m = mean
            std = values.count > 1 ? (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count - 1)).squareRoot() : 0
        }
    }

    public struct Row: Codable, Equatable {
        public var attack, defense, model: String
        public var seeds: [UInt64]
        public var cleanAcc, asr: Statistic
        public var robustAcc: Statistic?
        public var cleanAccBefore, asrBefore: Statistic
        public var der: Statistic
        public var seconds: Statistic

        enum CodingKeys: String, CodingKey {
            case attack, defense, model, seeds, asr, der, seconds
            case cleanAcc = "clean_acc", robustAcc = "robust_acc", cleanAccBefore = "clean_acc_before", asrBefore = "asr_before"
        }
    }

    /// One detector run on one poisoned training set and its model (one seed), from that
    /// detection stage's result.json.
    public struct DetectionCell: Codable, Equatable {
        public var attack, method, model: String
        public var seed: UInt64
        public var f1, tpr, fpr, precision: Double
        public var auroc: Double?
        public var seconds: Double
        /// The detection stage's folder, relative to the run folder.
        public var folder: String

        public init(attack: String, method: String, model: String, seed: UInt64, f1: Double, tpr: Double, fpr: Double,
                    precision: Double, auroc: Double?, seconds: Double, folder: String) {
            (self.attack, self.method, self.model, self.seed) = (attack, method, model, seed)
            (self.f1, self.tpr, self.fpr, self.precision, self.auroc) = (f1, tpr, fpr, precision, auroc)
            (self.seconds, self.folder) = (seconds, folder)
        }
    }

    /// The detection table's row: attack x method x model, seeds pooled.
    public struct DetectionRow: Codable, Equatable {
        public var attack, method, model: String
        public var seeds: [UInt64]
        public var f1, tpr, fpr, precision: Statistic
        /// nil when a seed's scores had no AUROC (a set without poisoned or without clean images).
        public var auroc: Statistic?
        public var seconds: Statistic
    }

    public var rows: [Row]
    public var cells: [Cell]
    /// The matrix's poisoned-sample detectors (empty without `matrix.detectors`).
    public var detection: [DetectionRow]
    public var detectionCells: [DetectionCell]

    public static let jsonFileName = "leaderboard.json"
    public static let csvFileName = "leaderboard.csv"
    public static let detectionCSVFileName = "detection.csv"

    enum CodingKeys: String, CodingKey {
        case rows, cells, detection
        case detectionCells = "detection_cells"
    }

    public static func der(asrBefore: Double, asrAfter: Double, accBefore: Double, accAfter: Double) -> Double {
        (max(0, asrBefore - asrAfter) - max(0, accBefore - accAfter) + 1) / 2
    }

    /// Rows in the order the cells came (attack, then defense or method, then model), seeds pooled.
    public init(cells: [Cell], detectionCells: [DetectionCell] = []) {
        self.cells = cells
        self.detectionCells = detectionCells
        detection = Self.grouped(detectionCells) { [$0.attack, $0.method, $0.model] }.map { key, group in
            let auroc = group.compactMap(\.auroc)
            return DetectionRow(attack: key[0], method: key[1], model: key[2], seeds: group.map(\.seed),
                                f1: Statistic(group.map(\.f1)), tpr: Statistic(group.map(\.tpr)), fpr: Statistic(group.map(\.fpr)),
                                precision: Statistic(group.map(\.precision)),
                                auroc: auroc.count == group.count ? Statistic(auroc) : nil, seconds: Statistic(group.map(\.seconds)))
        }
        rows = Self.grouped(cells) { [$0.attack, $0.defense, $0.model] }.map { key, group in
            let robust = group.compactMap(\.robustAfter)
            return Row(attack: key[0], defense: key[1], model: key[2], seeds: group.map(\.seed),
                       cleanAcc: Statistic(group.map(\.cleanAfter)), asr: Statistic(group.map(\.asrAfter)),
                       robustAcc: robust.count == group.count ? Statistic(robust) : nil,
                       cleanAccBefore: Statistic(group.map(\.cleanBefore)), asrBefore: Statistic(group.map(\.asrBefore)),
                       der: Statistic(group.map(\.der)), seconds: Statistic(group.map(\.seconds)))
        }
    }

    /// `items` grouped by `key`, the groups in the order their first item came (seeds pooled).
    static func grouped<T>(_ items: [T], by key: (T) -> [String]) -> [(key: [String], group: [T])] {
        var keys: [[String]] = []
        for item in items where !keys.contains(key(item)) { keys.append(key(item)) }
        return keys.map { k in (k, items.filter { key($0) == k }) }
    }

    public static func read(path: String) throws -> Leaderboard {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path, "cannot read the leaderboard") }
        do { return try JSONDecoder().decode(Leaderboard.self, from: data) } catch {
            throw FileError(path, "is not a leaderboard.json: \(error)")
        }
    }

    /// Writes leaderboard.json and leaderboard.csv (and detection.csv when detectors ran) into
    /// `directory`, each atomically.
    public func write(directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try encoder.encode(self), as: UTF8.self) + "\n",
                             to: (directory as NSString).appendingPathComponent(Self.jsonFileName))
        try AtomicFile.write(csv, to: (directory as NSString).appendingPathComponent(Self.csvFileName))
        if !detection.isEmpty {
            try AtomicFile.write(detectionCSV, to: (directory as NSString).appendingPathComponent(Self.detectionCSVFileName))
        }
    }

    public static let detectionCSVHeader = "attack,method,model,seeds,f1,f1_std,auroc,auroc_std,tpr,fpr,precision,seconds"

    public var detectionCSV: String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "" }
        return ([Self.detectionCSVHeader] + detection.map { r in
            [r.attack, r.method, r.model, r.seeds.map(String.init).joined(separator: " "), f(r.f1.mean), f(r.f1.std),
             f(r.auroc?.mean), f(r.auroc?.std), f(r.tpr.mean), f(r.fpr.mean), f(r.precision.mean),
             String(format: "%.1f", r.seconds.mean)].joined(separator: ",")
        }).joined(separator: "\n") + "\n"
    }

    public static let csvHeader = "attack,defense,model,seeds,clean_acc_before,asr_before,clean_acc,clean_acc_std,asr,asr_std,"
        + "robust_acc,robust_acc_std,der,der_std,seconds"

    public var csv: String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "" }
        return ([Self.csvHeader] + rows.map { r in
            [r.attack, r.defense, r.model, r.seeds.map(String.init).joined(separator: " "), f(r.cleanAccBefore.mean),
             f(r.asrBefore.mean), f(r.cleanAcc.mean), f(r.cleanAcc.std), f(r.asr.mean), f(r.asr.std), f(r.robustAcc?.mean),
             f(r.robustAcc?.std), f(r.der.mean), f(r.der.std), String(format: "%.1f", r.seconds.mean)].joined(separator: ",")
        }).joined(separator: "\n") + "\n"
    }
}

/// A grid of values in [0, 1] (rows x columns), each cell coloured from white to red and labelled
/// as a percentage: the leaderboard's ASR after each defense, attack x defense.
public struct Heatmap {
    public var title: String
    public var rowLabels: [String]
    public var columnLabels: [String]
    /// values[row][column]; nil draws an empty cell.
    public var values: [[Double?]]

    public init(title: String, rowLabels: [String], columnLabels: [String], values: [[Double?]]) {
        self.title = title
        self.rowLabels = rowLabels
        self.columnLabels = columnLabels
        self.values = values
    }

    public var svg: String {
        let cellWidth = 72.0, cellHeight = 30.0, top = 56.0
        let left = min(max(rowLabels.map { Double($0.count) * 6.5 }.max() ?? 40, 40), 200) + 14
        let width = left + Double(columnLabels.count) * cellWidth + 16
        let height = top + Double(rowLabels.count) * cellHeight + 16
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(xmlEscaped(title))\" "
            + "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
            + "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>\n"
        func label(_ s: String, _ x: Double, _ y: Double, _ anchor: String, weight: String = "normal", fill: String = "#222222") {
            out += "<text x=\"\(fixed(x, 1))\" y=\"\(fixed(y, 1))\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" fill=\"\(fill)\">\(xmlEscaped(s))</text>\n"
        }
        label(title, width / 2, 20, "middle", weight: "bold")
        for (c, name) in columnLabels.enumerated() { label(name, left + (Double(c) + 0.5) * cellWidth, top - 8, "middle") }
        for (r, name) in rowLabels.enumerated() {
            let y = top + Double(r) * cellHeight
            label(name, left - 6, y + cellHeight / 2 + 4, "end")
            for c in columnLabels.indices {
                let x = left + Double(c) * cellWidth
                let value = r < values.count && c < values[r].count ? values[r][c] : nil
                let shade = value.map { Int((1 - min(max($0, 0), 1)) * 255) } ?? 240
                let fill = value == nil ? "#f0f0f0" : String(format: "#ff%02x%02x", shade, shade)
                out += "<rect class=\"cell\" data-value=\"\(value.map { fixed($0, 4) } ?? "")\" x=\"\(fixed(x, 1))\" y=\"\(fixed(y, 1))\" "
                    + "width=\"\(fixed(cellWidth - 2, 1))\" height=\"\(fixed(cellHeight - 2, 1))\" fill=\"\(fill)\"/>\n"
                label(value.map { fixed($0 * 100, 1) + "%" } ?? "-", x + cellWidth / 2 - 1, y + cellHeight / 2 + 4, "middle",
                      fill: (value ?? 0) > 0.6 ? "#ffffff" : "#222222")
            }
        }
        return out + "</svg>\n"
    }
}
