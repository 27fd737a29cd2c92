import Attacks
import Datasets

// Temporary until the attacks branch lands its PNG pattern loading and clean-label folder reader.
enum TriggerPattern {
    static func blendTrigger(patternFile: String?, alpha: Double, seed: UInt64) throws -> (Trigger, String?) {
        guard patternFile == nil else { throw AttackError.invalidTrigger("--trigger-pattern needs the PNG reader") }
        return (try Trigger.gaussianNoise(pattern: Trigger.seededNoisePattern(seed: seed), channels: 3, alpha: alpha),
                "the tool's own seeded noise (seed \(seed))")
    }
}

enum CleanLabelFolder {
    static func read(directory: String) throws -> (images: ImageSet, isPoisoned: [Bool]) {
        throw AttackError.invalidTrigger("clean-label folder reading lands with the attacks branch")
    }
}
