import Datasets
import Foundation

/// SIG (Barni et al. 2019), as BackdoorBench's `sigTriggerAttack`: the horizontal sinusoid
/// `delta * sin(2 pi j f / 32)` over columns j (stored as float32 there), added to every channel
/// of the image, clipped to [0, 255] and truncated to bytes. A clean-label attack: only
/// target-class training images get it, their labels kept.
public struct SIGTrigger: ImageTrigger, Equatable {
    public static let defaultDelta = 40.0, defaultFrequency = 6.0
    public let delta: Double
    public let frequency: Double
    /// The signal of each column, float32 as the reference's pattern array holds it.
    public let columnSignal: [Float]

    public init(delta: Double = defaultDelta, frequency: Double = defaultFrequency) throws {
        guard delta.isFinite && delta >= 0 && delta <= 255 else {
            throw AttackError.invalidValue(name: "SIG delta", value: "\(delta)", allowed: "a number in [0, 255]")
        }
        guard frequency.isFinite && frequency > 0 else {
            throw AttackError.invalidValue(name: "SIG frequency", value: "\(frequency)", allowed: "a number > 0")
        }
        self.delta = delta
        self.frequency = frequency
        let m = Double(ImageSet.width)
        columnSignal = (0..<ImageSet.width).map { j in Float(delta * sin(2 * Double.pi * Double(j) * frequency / m)) }
    }

    public func apply(to set: inout ImageSet, at indices: [Int]) {
        for index in indices {
            let base = index * ImageSet.pixelsPerImage
            for i in 0..<ImageSet.pixelsPerImage {
                let column = (i / ImageSet.channels) % ImageSet.width
                // uint32 + float32 is float64 in numpy; np.uint8 truncates after the clip.
                let value = Double(set.pixels[base + i]) + Double(columnSignal[column])
                set.pixels[base + i] = UInt8(min(max(value, 0), 255))
            }
        }
    }
}
