/// How much to prune, decided on the defender's clean images alone (never the test set): the one
/// rule Fine-Pruning's channel count, RNP's level and ANP's chosen threshold share. The levels are
/// tried from least to most pruning; the choice is the last one before the first whose clean
/// accuracy falls by `accRatio` or more relative to the unpruned model's (`baseline`). A level
/// that gains accuracy passes; levels after the first failure are not tried (pruning more rarely
/// wins accuracy back, and a later pass would be luck on a few hundred images).
public struct LevelChoice<Level> {
    /// The chosen level; nil when the first level already lost `accRatio` (or the model has no
    /// clean accuracy to lose): then nothing is pruned.
    public var level: Level?
    /// Clean accuracy of the unpruned model on the defender's images.
    public var baseline: Double
    public var accRatio: Double
    /// Every level tried, in order, with its clean accuracy (the last one tried stopped the search
    /// unless every level passed).
    public var tried: [(level: Level, accuracy: Double)]

    /// Whether a level with this clean accuracy is within the budget.
    public static func keeps(_ accuracy: Double, baseline: Double, accRatio: Double) -> Bool {
        baseline > 0 && (baseline - accuracy) / baseline < accRatio
    }

    public static func choose(levels: [Level], baseline: Double, accRatio: Double,
                              accuracy: (Level) throws -> Double) rethrows -> LevelChoice {
        var choice = LevelChoice(level: nil, baseline: baseline, accRatio: accRatio, tried: [])
        for level in levels {
            let a = try accuracy(level)
            choice.tried.append((level, a))
            guard keeps(a, baseline: baseline, accRatio: accRatio) else { break }
            choice.level = level
        }
        return choice
    }
}
