import Foundation
import Support

/// Builds `report.html` (one self-contained file: inline CSS, inline SVG, images as data URIs)
/// and `report.md` (same tables, plots linked from `plots/`) from a run folder. Whatever is
/// missing or unreadable becomes a note in its section, never a failure.
public enum ReportBuilder {
    public struct Report {
        public var html: String
        public var markdown: String
        /// Every chart of the report, also written as `plots/<fileName>`.
        public var plots: [Plot]
        /// The notes about missing or unreadable files, in report order, each once.
        public var problems: [String]
    }

    public struct WrittenReport {
        public var htmlPath: String
        public var markdownPath: String
        public var plotPaths: [String]
        public var problems: [String]
    }

    public static let htmlFileName = "report.html"
    public static let markdownFileName = "report.md"
    public static let plotsFolder = "plots"

    /// Reads the run folder and renders both reports in memory. Throws only when the folder
    /// itself does not exist.
    public static func build(runDirectory: String) throws -> Report {
        let run = try RunFolder.load(directory: runDirectory)
        let document = document(for: run)
        var problems: [String] = []
        for case .note(let text) in document.blocks where !problems.contains(text) {
            problems.append(text)
        }
        return Report(html: document.html, markdown: document.markdown(plotsFolder: plotsFolder),
                      plots: document.plots, problems: problems)
    }

    /// Builds and writes `report.html`, `report.md` and `plots/*.svg` into the run folder
    /// (each atomically), removing SVGs of an earlier build that this one no longer has.
    @discardableResult
    public static func write(runDirectory: String) throws -> WrittenReport {
        let report = try build(runDirectory: runDirectory)
        let plotsDirectory = runDirectory + "/" + plotsFolder
        var plotPaths: [String] = []
        for plot in report.plots {
            let path = plotsDirectory + "/" + plot.fileName
            try AtomicFile.write(plot.svg, to: path)
            plotPaths.append(path)
        }
        let current = Set(report.plots.map(\.fileName))
        for stale in (try? FileManager.default.contentsOfDirectory(atPath: plotsDirectory)) ?? []
        where stale.hasSuffix(".svg") && !current.contains(stale) {
            try? FileManager.default.removeItem(atPath: plotsDirectory + "/" + stale)
        }
        let htmlPath = runDirectory + "/" + htmlFileName
        let markdownPath = runDirectory + "/" + markdownFileName
        try AtomicFile.write(report.html, to: htmlPath)
        try AtomicFile.write(report.markdown, to: markdownPath)
        return WrittenReport(htmlPath: htmlPath, markdownPath: markdownPath, plotPaths: plotPaths,
                             problems: report.problems)
    }

    // MARK: Sections

    /// The report's sections, in order; the raw value is the HTML anchor.
    public enum Section: String, CaseIterable {
        case summary, leaderboard, training, samples, masks, pruning, sweep, configuration, timings

        public var title: String {
            switch self {
            case .summary: return "Summary"
            case .leaderboard: return "Leaderboard: attacks x defenses"
            case .training: return "Training curves"
            case .samples: return "Clean and triggered examples"
            case .masks: return "ANP mask values"
            case .pruning: return "Pruning curves"
            case .sweep: return "ANP alpha sweep"
            case .configuration: return "Configuration"
            case .timings: return "Timings"
            }
        }

        /// A defenses matrix (leaderboard.json, no summary.json) has no ANP chain: its masks,
        /// pruning curves, sweep and ANP summary would be only notes of missing files.
        func applies(to run: RunFolder) -> Bool {
            guard run.leaderboard.value != nil, run.summary.value == nil else { return true }
            return ![.summary, .masks, .pruning, .sweep].contains(self)
        }

        func blocks(_ run: RunFolder) -> [ReportDocument.Block] {
            switch self {
            case .summary: return summarySection(run)
            case .leaderboard: return leaderboardSection(run.leaderboard)
            case .training: return perAttack(run, trainingSection)
            case .samples: return perAttack(run, samplesSection)
            case .masks: return perAttack(run, maskSection)
            case .pruning: return perAttack(run, pruningSection)
            case .sweep: return sweepSection(run.sweep)
            case .configuration: return configurationSection(run)
            case .timings: return timingsSection(run)
            }
        }
    }

    static func document(for run: RunFolder) -> ReportDocument {
        let name = URL(fileURLWithPath: run.directory).standardizedFileURL.lastPathComponent
        var document = ReportDocument(title: "Backdoor attacks and ANP: \(name)")
        if let preset = run.summary.value?.preset {
            document.blocks.append(.paragraph("Preset: \(preset). Attacks: \(run.attacks.isEmpty ? "none found" : run.attacks.map(\.name).joined(separator: ", "))."))
        }
        for section in Section.allCases where section.applies(to: run) {
            document.blocks.append(.heading(level: 2, text: section.title, anchor: section.rawValue))
            document.blocks += section.blocks(run)
        }
        return document
    }

    static func perAttack(_ run: RunFolder, _ section: (AttackRun) -> [ReportDocument.Block]) -> [ReportDocument.Block] {
        if run.attacks.isEmpty { return [.note("Missing: no attack folders (<attack>/train, anp, prune) in this run folder")] }
        return run.attacks.flatMap { [.heading(level: 3, text: $0.name, anchor: nil)] + section($0) }
    }

    static func leaderboardSection(_ piece: Piece<Leaderboard>) -> [ReportDocument.Block] {
        guard let board = piece.value else {
            if case .missing = piece { return [.paragraph("No leaderboard: this run has no defenses matrix (`backdoor run --defenses ...`).")] }
            return [.note(piece.problem!)]
        }
        func stat(_ s: Leaderboard.Statistic?) -> String {
            guard let s else { return "-" }
            return percent(s.mean) + (board.rows.contains { $0.seeds.count > 1 } ? " ± " + fixed(s.std * 100, 2) : "")
        }
        var detection: [ReportDocument.Block] = []
        if !board.detection.isEmpty {
            let multiSeed = board.detection.contains { $0.seeds.count > 1 }
            func score(_ s: Leaderboard.Statistic?) -> String {
                guard let s else { return "-" }
                return fixed(s.mean, 3) + (multiSeed ? " ± " + fixed(s.std, 3) : "")
            }
            detection = [
                .heading(level: 3, text: "Poisoned-sample detection: attacks x methods", anchor: "detection"),
                .paragraph("Each detector inspected the attack's poisoned training set (WaNet, BPP: one epoch's draw) through the model "
                    + "trained on it; scored against the set's truth. AUROC of the detector's suspicion score."),
                .table(headers: ["Attack", "Method", "Model", "Seeds", "F1", "AUROC", "TPR", "FPR", "Precision", "Time"],
                       rows: board.detection.map { r in
                           [r.attack, r.method, r.model, "\(r.seeds.count)", score(r.f1), score(r.auroc), percent(r.tpr.mean),
                            percent(r.fpr.mean), percent(r.precision.mean), duration(r.seconds.mean)]
                       }, anchor: "detection-table"),
            ]
        }
        guard !board.rows.isEmpty else { return detection }
        let rows = board.rows.map { r in
            [r.attack, r.defense, r.model, "\(r.seeds.count)", stat(r.cleanAccBefore), stat(r.asrBefore), stat(r.cleanAcc),
             stat(r.asr), stat(r.robustAcc), fixed(r.der.mean, 3), duration(r.seconds.mean)]
        }
        let attacks = board.rows.map(\.attack).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let defenses = board.rows.map(\.defense).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        var blocks: [ReportDocument.Block] = [
            .paragraph("Each attack's model trained once per model and seed; every defense run on it and judged on the same test images. "
                + "Robust acc.: triggered non-target test images against their true labels. DER (BackdoorBench): "
                + "(max(0, ASR drop) - max(0, clean-accuracy drop) + 1) / 2. Means over seeds (± sample standard deviation, points)."),
            .table(headers: ["Attack", "Defense", "Model", "Seeds", "Clean acc. before", "ASR before", "Clean acc. after",
                             "ASR after", "Robust acc. after", "DER", "Time"], rows: rows, anchor: "leaderboard-table"),
        ]
        for model in board.rows.map(\.model).reduce(into: [String](), { if !$0.contains($1) { $0.append($1) } }) {
            let values = attacks.map { attack in
                defenses.map { defense in board.rows.first { $0.attack == attack && $0.defense == defense && $0.model == model }?.asr.mean }
            }
            let map = Heatmap(title: "ASR after defense (\(model))", rowLabels: attacks, columnLabels: defenses, values: values)
            blocks.append(.plots([Plot(fileName: "leaderboard_asr_\(fileSafe(model)).svg", title: map.title, svg: map.svg)]))
        }
        return blocks + detection
    }

    static let summaryHeaders = ["Attack", "Clean acc. before", "ASR before", "Clean acc. after", "ASR after",
                                 "Clean acc. change", "Threshold", "Pruned neurons", "Time"]

    static let summaryExplanation = "Clean acc.: accuracy on the clean test set. ASR (attack success rate): share of triggered test images of other classes classified as the target. Before: the backdoored model; after: pruned by ANP at the threshold."

    static func summarySection(_ run: RunFolder) -> [ReportDocument.Block] {
        guard let summary = run.summary.value else { return [.note(run.summary.problem!)] + derivedSummary(run) }
        let names = RunFolder.knownAttacks.filter { summary.attacks[$0] != nil }
            + summary.attacks.keys.filter { !RunFolder.knownAttacks.contains($0) }.sorted()
        if names.isEmpty { return [.note("Missing: summary.json lists no attacks")] }
        let rows = names.map { name -> [String] in
            let attack = summary.attacks[name]!
            return [name, percent(attack.cleanAccuracyBefore), percent(attack.attackSuccessRateBefore),
                    percent(attack.cleanAccuracyAfter), percent(attack.attackSuccessRateAfter),
                    points(attack.cleanAccuracyAfter - attack.cleanAccuracyBefore),
                    threshold(attack.threshold), "\(attack.prunedNeurons)", duration(attack.seconds)]
        }
        return [.table(headers: summaryHeaders, rows: rows, anchor: "summary-table"), .paragraph(summaryExplanation)]
    }

    /// Without summary.json (a run stopped early), the same table from the stage files: before
    /// = the last epoch of the training log, after = prune/result.json.
    static func derivedSummary(_ run: RunFolder) -> [ReportDocument.Block] {
        let rows = run.attacks.compactMap { attack -> [String]? in
            let last = attack.trainingLog.value?.last
            let result = attack.pruneResult.value
            if last == nil && result == nil { return nil }
            let before = (last?.cleanAccuracy, last?.poisonAccuracy)
            let after = (result?.cleanAccuracy, result?.attackSuccessRate)
            var change = "-"
            if let cleanBefore = before.0, let cleanAfter = after.0 { change = points(cleanAfter - cleanBefore) }
            return [attack.name, optional(before.0, percent), optional(before.1, percent), optional(after.0, percent),
                    optional(after.1, percent), change, optional(result?.threshold, threshold),
                    result.map { "\($0.prunedNeurons)" } ?? "-", "-"]
        }
        if rows.isEmpty { return [] }
        return [
            .paragraph("From the stage files instead (before: last epoch of train/train_log.jsonl; after: prune/result.json; \"-\" where a stage has not finished):"),
            .table(headers: summaryHeaders, rows: rows, anchor: "summary-table"),
            .paragraph(summaryExplanation),
        ]
    }

    static func trainingSection(_ attack: AttackRun) -> [ReportDocument.Block] {
        guard let log = attack.trainingLog.value else { return [.note(attack.trainingLog.problem!)] }
        if log.isEmpty { return [.note("Missing: \(attack.name)/train/train_log.jsonl has no epochs")] }
        let accuracy = LineChart(
            title: "\(attack.name): accuracy per epoch", xLabel: "epoch", yLabel: "%",
            series: [
                .init(name: "clean accuracy", points: curve(log, \.cleanAccuracy, scale: 100)),
                .init(name: "attack success rate", points: curve(log, \.poisonAccuracy, scale: 100)),
                .init(name: "training accuracy", points: curve(log, \.trainAccuracy, scale: 100), dashed: true),
            ],
            yRange: 0...100)
        let loss = LineChart(
            title: "\(attack.name): loss per epoch", xLabel: "epoch", yLabel: "cross-entropy",
            series: [
                .init(name: "clean loss", points: curve(log, \.cleanLoss)),
                .init(name: "poison loss", points: curve(log, \.poisonLoss)),
                .init(name: "training loss", points: curve(log, \.trainLoss), dashed: true),
            ])
        let rows = log.map { record in
            ["\(record.step)", optional(record.learningRate) { String(format: "%g", $0) }, optional(record.trainLoss) { fixed($0, 4) },
             optional(record.trainAccuracy, percent), optional(record.cleanLoss) { fixed($0, 4) },
             optional(record.cleanAccuracy, percent), optional(record.poisonLoss) { fixed($0, 4) },
             optional(record.poisonAccuracy, percent), optional(record.seconds) { fixed($0, 1) }]
        }
        return [
            .plots([plot(attack, "training-accuracy", accuracy.title, accuracy.svg),
                    plot(attack, "training-loss", loss.title, loss.svg)]),
            .foldedTable(summary: "Per-epoch log (\(log.count) epochs)",
                         headers: ["Epoch", "LR", "Train loss", "Train acc.", "Clean loss", "Clean acc.",
                                   "Poison loss", "ASR", "Seconds"],
                         rows: rows),
        ]
    }

    static func samplesSection(_ attack: AttackRun) -> [ReportDocument.Block] {
        guard let image = attack.samples.value else { return [.note(attack.samples.problem!)] }
        return [.image(image, relativePath: "\(attack.name)/train/samples.png",
                       caption: "\(attack.name): clean examples and the same examples with the trigger, as drawn by the training stage (\(image.width) x \(image.height) pixels, shown 3x)")]
    }

    static func maskSection(_ attack: AttackRun) -> [ReportDocument.Block] {
        var blocks: [ReportDocument.Block] = []
        let chosenThreshold = attack.pruneResult.value?.threshold
        if let masks = attack.maskValues.value, !masks.entries.isEmpty {
            let layers = masks.layers
            let grid = HistogramGrid(title: "\(attack.name): ANP mask values per BN layer",
                                     groups: layers.map { ($0, masks.values(layer: $0)) }, marker: chosenThreshold)
            var plots = [plot(attack, "mask-histograms", grid.title, grid.svg)]
            var rows: [[String]] = []
            for layer in layers {
                let values = masks.values(layer: layer)
                var row = [layer, "\(values.count)", fixed(values.min()!, 4), fixed(values.reduce(0, +) / Double(values.count), 4)]
                if let chosenThreshold { row.append("\(values.filter { $0 <= chosenThreshold }.count)") }
                rows.append(row)
            }
            if let chosenThreshold {
                let bars = BarChart(title: "\(attack.name): neurons with mask <= \(threshold(chosenThreshold)) per layer",
                                    valueLabel: "neurons pruned at the chosen threshold",
                                    bars: layers.map { layer in (layer, Double(masks.values(layer: layer).filter { $0 <= chosenThreshold }.count)) })
                plots.append(plot(attack, "pruned-per-layer", bars.title, bars.svg))
            }
            blocks.append(.plots(plots))
            blocks.append(.foldedTable(
                summary: "Mask values per layer (\(masks.entries.count) neurons in \(layers.count) layers)",
                headers: ["Layer", "Neurons", "Min. mask", "Mean mask"] + (chosenThreshold == nil ? [] : ["Pruned"]),
                rows: rows))
        } else if let masks = attack.maskValues.value, masks.entries.isEmpty {
            blocks.append(.note("Missing: \(attack.name)/anp/mask_values.txt has no neurons"))
        } else {
            blocks.append(.note(attack.maskValues.problem!))
        }
        if let log = attack.anpLog.value, !log.isEmpty {
            let accuracy = LineChart(
                title: "\(attack.name): ANP mask optimisation", xLabel: "iteration", yLabel: "%",
                series: [
                    .init(name: "clean accuracy", points: curve(log, \.cleanAccuracy, scale: 100)),
                    .init(name: "attack success rate", points: curve(log, \.poisonAccuracy, scale: 100)),
                    .init(name: "mask training accuracy", points: curve(log, \.trainAccuracy, scale: 100), dashed: true),
                ],
                yRange: 0...100)
            let loss = LineChart(
                title: "\(attack.name): ANP losses", xLabel: "iteration", yLabel: "cross-entropy",
                series: [
                    .init(name: "clean loss", points: curve(log, \.cleanLoss)),
                    .init(name: "poison loss", points: curve(log, \.poisonLoss)),
                    .init(name: "mask training loss", points: curve(log, \.trainLoss), dashed: true),
                ])
            blocks.append(.plots([plot(attack, "anp-accuracy", accuracy.title, accuracy.svg),
                                  plot(attack, "anp-loss", loss.title, loss.svg)]))
        } else if let log = attack.anpLog.value, log.isEmpty {
            blocks.append(.note("Missing: \(attack.name)/anp/anp_log.jsonl has no iterations"))
        } else {
            blocks.append(.note(attack.anpLog.problem!))
        }
        return blocks
    }

    static let pruningHeaders = ["Pruned", "Last layer", "Neuron", "Mask", "Poison loss", "ASR", "Clean loss", "Clean acc."]

    static func pruningSection(_ attack: AttackRun) -> [ReportDocument.Block] {
        var blocks: [ReportDocument.Block] = []
        let result = attack.pruneResult.value
        if let result {
            blocks.append(.paragraph("Chosen threshold \(threshold(result.threshold)): \(result.prunedNeurons) neurons pruned, clean accuracy \(percent(result.cleanAccuracy)), ASR \(percent(result.attackSuccessRate))."))
        } else {
            blocks.append(.note(attack.pruneResult.problem!))
        }
        var plots: [Plot] = []
        var tables: [ReportDocument.Block] = []
        for (piece, kind) in [(attack.pruningByThreshold, "threshold"), (attack.pruningByNumber, "number")] {
            guard let table = piece.value, !table.rows.isEmpty else {
                blocks.append(.note(piece.problem ?? "Missing: \(attack.name)/prune/pruning_by_\(kind).txt has no rows"))
                continue
            }
            let byThreshold = kind == "threshold"
            let x: (PruningTable.Row) -> Double = { byThreshold ? $0.mask : Double($0.pruned) }
            let chart = LineChart(
                title: byThreshold ? "\(attack.name): pruning by threshold" : "\(attack.name): pruning by number of neurons",
                xLabel: byThreshold ? "mask threshold (neurons with mask <= threshold pruned)" : "neurons pruned (lowest masks first)",
                yLabel: "%",
                series: [
                    .init(name: "clean accuracy", points: table.rows.map { (x($0), $0.cleanAccuracy * 100) }),
                    .init(name: "attack success rate", points: table.rows.map { (x($0), $0.attackSuccessRate * 100) }),
                ],
                yRange: 0...100,
                marker: result.map { byThreshold ? ($0.threshold, "chosen \(threshold($0.threshold))") : (Double($0.prunedNeurons), "chosen: \($0.prunedNeurons)") })
            plots.append(plot(attack, "pruning-by-\(kind)", chart.title, chart.svg))
            let shown = thinned(table.rows, limit: tableRowLimit)
            let count = byThreshold ? "\(table.rows.count) thresholds" : "\(table.rows.count) steps"
            tables.append(.foldedTable(
                summary: "Pruning by \(kind) (\(count)\(shown.count < table.rows.count ? ", \(shown.count) shown" : ""))",
                headers: byThreshold ? ["Pruned", "Last layer", "Neuron", "Threshold"] + pruningHeaders.dropFirst(4) : pruningHeaders,
                rows: shown.map { row in
                    ["\(row.pruned)", row.layer, "\(row.neuron)", fixed(row.mask, 4), fixed(row.poisonLoss, 4),
                     percent(row.attackSuccessRate), fixed(row.cleanLoss, 4), percent(row.cleanAccuracy)]
                }))
        }
        if !plots.isEmpty { blocks.append(.plots(plots)) }
        return blocks + tables
    }

    static func sweepSection(_ sweep: Piece<SweepTable>) -> [ReportDocument.Block] {
        guard let table = sweep.value else {
            if case .missing = sweep {
                return [.note("Missing: sweep/sweep.json (run `backdoor sweep` to fill this section)")]
            }
            return [.note(sweep.problem!)]
        }
        if table.rows.isEmpty { return [.note("Missing: sweep/sweep.json has no rows")] }
        let rows = table.rows.sorted { ($0.alpha, $0.threshold) < ($1.alpha, $1.threshold) }
        let alphas = rows.map(\.alpha).reduce(into: [Double]()) { if !$0.contains($1) { $0.append($1) } }
        func series(_ value: @escaping (SweepTable.Row) -> Double) -> [LineChart.Series] {
            alphas.map { alpha in
                .init(name: "alpha \(threshold(alpha))",
                      points: rows.filter { $0.alpha == alpha }.map { ($0.threshold, value($0) * 100) })
            }
        }
        let asr = LineChart(title: "ASR after pruning, per ANP alpha", xLabel: "pruning threshold", yLabel: "ASR %",
                            series: series(\.attackSuccessRate), yRange: 0...100)
        // Fitted to the data: clean accuracy moves by a few points only.
        let clean = LineChart(title: "Clean accuracy after pruning, per ANP alpha", xLabel: "pruning threshold",
                              yLabel: "clean accuracy %", series: series(\.cleanAccuracy))
        var blocks: [ReportDocument.Block] = []
        if let attack = table.attack {
            blocks.append(.paragraph("Backdoored model: \(attack). ANP alpha weighs the natural loss against the adversarial-perturbation loss in the mask objective."))
        }
        blocks.append(.plots([Plot(fileName: "sweep-asr.svg", title: asr.title, svg: asr.svg),
                              Plot(fileName: "sweep-clean-accuracy.svg", title: clean.title, svg: clean.svg)]))
        blocks.append(.table(
            headers: ["ANP alpha", "Threshold", "Clean acc.", "ASR", "Pruned neurons"],
            rows: rows.map { [threshold($0.alpha), threshold($0.threshold), percent($0.cleanAccuracy),
                              percent($0.attackSuccessRate), "\($0.prunedNeurons)"] },
            anchor: "sweep-table"))
        return blocks
    }

    static func configurationSection(_ run: RunFolder) -> [ReportDocument.Block] {
        var blocks: [ReportDocument.Block] = []
        switch run.summary {
        case .present(let summary):
            blocks.append(.paragraph("Run configuration (summary.json), preset \(summary.preset ?? "not recorded"):"))
            if let configuration = summary.configurationJSON {
                blocks.append(.code(configuration, language: "json"))
            } else {
                blocks.append(.note("Missing: summary.json has no \"config\" object"))
            }
        default:
            if let yaml = try? String(contentsOfFile: run.directory + "/config.yaml", encoding: .utf8) {
                blocks.append(.paragraph("Run configuration (config.yaml):"))
                blocks.append(.code(yaml, language: "yaml"))
            } else {
                blocks.append(.note(run.summary.problem!))
            }
        }
        for attack in run.attacks {
            blocks.append(.heading(level: 3, text: "\(attack.name): training configuration", anchor: nil))
            if let configuration = attack.trainingConfiguration.value {
                blocks.append(.code(configuration, language: "json"))
            } else {
                blocks.append(.note(attack.trainingConfiguration.problem!))
            }
        }
        return blocks
    }

    static func timingsSection(_ run: RunFolder) -> [ReportDocument.Block] {
        if run.attacks.isEmpty { return [.note("Missing: no attack folders in this run folder")] }
        let summary = run.summary.value
        func total(_ log: Piece<[LogRecord]>) -> String {
            guard let log = log.value else { return "missing" }
            let seconds = log.compactMap(\.seconds)
            return seconds.isEmpty ? "not logged" : duration(seconds.reduce(0, +))
        }
        let rows = run.attacks.map { attack -> [String] in
            [attack.name,
             attack.trainingLog.value.map { "\($0.count)" } ?? "missing",
             total(attack.trainingLog),
             attack.anpLog.value.map { $0.last.map { "\($0.step)" } ?? "0" } ?? "missing",
             total(attack.anpLog),
             summary?.attacks[attack.name].map { duration($0.seconds) } ?? "missing"]
        }
        return [
            .table(headers: ["Attack", "Epochs", "Training time", "ANP iterations", "ANP time", "Whole attack (summary.json)"],
                   rows: rows, anchor: "timings-table"),
            .paragraph("Training and ANP times are the sums of the per-epoch and per-logged-interval times of their logs; the whole-attack time includes poisoning, evaluation and pruning."),
        ]
    }

    /// Longest listing in a table; longer ones (pruning one neuron at a time on a width-64
    /// model gives thousands of rows) show evenly spaced rows, the first and the last.
    static let tableRowLimit = 200

    static func thinned<T>(_ rows: [T], limit: Int) -> [T] {
        guard rows.count > limit, limit >= 2 else { return rows }
        let stride = Double(rows.count - 1) / Double(limit - 1)
        return (0..<limit).map { rows[Int((Double($0) * stride).rounded())] }
    }

    // MARK: Formatting

    static func plot(_ attack: AttackRun, _ kind: String, _ title: String, _ svg: String) -> Plot {
        Plot(fileName: "\(fileSafe(attack.name))-\(kind).svg", title: title, svg: svg)
    }

    static func fileSafe(_ name: String) -> String {
        String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })
    }

    static func curve(_ log: [LogRecord], _ metric: KeyPath<LogRecord, Double?>, scale: Double = 1) -> [(x: Double, y: Double)] {
        log.compactMap { record in record[keyPath: metric].map { (Double(record.step), $0 * scale) } }
    }

    /// A fraction as a percentage with two decimals ("93.12%"): exact for values with four
    /// decimals, as the logs write them.
    public static func percent(_ fraction: Double) -> String { fixed(fraction * 100, 2) + "%" }

    /// A difference of fractions in percentage points, signed.
    static func points(_ difference: Double) -> String {
        let text = fixed(difference * 100, 2)
        return (text.hasPrefix("-") || text == "0.00" ? text : "+" + text) + " pt"
    }

    /// A threshold or alpha: at least two decimals, up to four when needed.
    static func threshold(_ value: Double) -> String {
        var text = fixed(value, 4)
        while text.hasSuffix("0"), let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > 3 {
            text.removeLast()
        }
        return text
    }

    static func duration(_ seconds: Double) -> String {
        seconds < 60 ? fixed(seconds, 1) + " s" : "\(fixed(seconds, 0)) s (\(ProgressBar.clock(seconds)))"
    }

    static func optional<T>(_ value: T?, _ format: (T) -> String) -> String {
        value.map(format) ?? "-"
    }
}
