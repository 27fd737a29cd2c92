import Formats
import Foundation
import Support

/// A training-set attack that poisons every batch afresh (WaNet, BPP), as their reference
/// training loops do: the loader hands it the batch's clean images and it returns the batch the
/// model trains on, poisoned, normalised and augmented its own way.
public protocol BatchPoisoning {
    /// The training batch of the images at `indices` (the epoch's shuffled order); `augment`
    /// says whether the run augments at all, `generator` is this batch's own stream.
    func trainingBatch(_ images: ImageSet, indices: [Int], augment: Bool, generator: inout SeededGenerator,
                       normalization: Normalization) -> Batch
}

/// The augmentation WaNet's and BPP's reference code (BackdoorBench's `PostTensorTransform`)
/// applies to a whole normalised batch after poisoning: with probability 0.8 a random crop of the
/// batch zero-padded by 5, with probability 0.5 a rotation by a uniform angle in [-10, 10]
/// degrees (nearest neighbour, zero fill, about the centre), then a horizontal flip with
/// probability 0.5. As there, one draw applies to every image of the batch.
public enum BatchAugmentation {
    public static let cropPadding = 5, rotationDegrees = 10.0

    public static func apply(_ images: inout [Float], count: Int, using generator: inout SeededGenerator) {
        if generator.nextFloat() < 0.8 {
            let top = uniform(2 * cropPadding + 1, using: &generator), left = uniform(2 * cropPadding + 1, using: &generator)
            transform(&images, count: count) { y, x in (y + top - cropPadding, x + left - cropPadding) }
        }
        if generator.nextFloat() < 0.5 {
            let angle = (2 * Double(generator.nextFloat()) - 1) * rotationDegrees * .pi / 180
            let (c, s) = (cos(angle), sin(angle))
            let centre = Double(Batch.width - 1) / 2
            transform(&images, count: count) { y, x in
                let dx = Double(x) - centre, dy = Double(y) - centre
                // Source of an output pixel under the inverse rotation, rounded half to even as grid_sample's nearest mode.
                return (Int((s * dx + c * dy + centre).rounded(.toNearestOrEven)),
                        Int((c * dx - s * dy + centre).rounded(.toNearestOrEven)))
            }
        }
        if generator.next() >> 63 == 1 {
            transform(&images, count: count) { y, x in (y, Batch.width - 1 - x) }
        }
    }

    /// out(y, x) = in(source(y, x)) for every plane, 0 where the source lies outside the image.
    private static func transform(_ images: inout [Float], count: Int, source: (Int, Int) -> (Int, Int)) {
        let (h, w) = (Batch.height, Batch.width)
        var map = [Int](repeating: -1, count: h * w)
        for y in 0..<h {
            for x in 0..<w {
                let (sy, sx) = source(y, x)
                if (0..<h).contains(sy) && (0..<w).contains(sx) { map[y * w + x] = sy * w + sx }
            }
        }
        var plane = [Float](repeating: 0, count: h * w)
        for p in 0..<count * Batch.channels {
            let base = p * h * w
            for i in 0..<h * w { plane[i] = map[i] < 0 ? 0 : images[base + map[i]] }
            images.replaceSubrange(base..<base + h * w, with: plane)
        }
    }
}

/// An attack whose trigger is a network trained along with the classifier (Input-aware): it
/// remakes each clean training batch and learns from the classifier's input gradient.
public protocol JointTrainingAttack: AnyObject {
    /// Runs before the classifier's first epoch (Input-aware's mask generator pretraining).
    func prepare(log: (String) -> Void) throws
    /// The batch the classifier trains on, from the loader's clean batch `number` of `epoch`.
    func trainingBatch(_ clean: Batch, epoch: Int, number: Int) throws -> Batch
    /// The gradient of the classifier's mean loss with respect to that batch's images (NCHW).
    func learn(inputGradient: [Float], epoch: Int) throws
    /// The attack-success test set (non-target images, triggered, labelled with the target).
    func poisonTest(from cleanTest: ImageSet) throws -> ImageSet
    /// Everything training changes in the attack (its networks, their optimisers), for the
    /// classifier's resume state; the rest follows from the seed and the epoch.
    func trainingState() throws -> [String: HostTensor]
    /// Continues from what `trainingState` returned (read from `source`).
    func restoreTrainingState(_ tensors: [String: HostTensor], source: String) throws
}
