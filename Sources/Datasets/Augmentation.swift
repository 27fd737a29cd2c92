import Foundation
import Support

/// Per-channel normalisation `(v / 255 - mean) / std`, in Float32 as torchvision computes it.
public struct Normalization: Equatable {
    public var mean: [Float]
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        precondition(mean.count == 3 && std.count == 3)
        self.mean = mean
        self.std = std
    }

    /// The reference code's CIFAR-10 constants.
    public static let cifar10 = Normalization(mean: [0.4914, 0.4822, 0.4465], std: [0.2023, 0.1994, 0.2010])

    /// The normalised value of byte `value` in channel `channel`.
    public func apply(_ value: UInt8, channel: Int) -> Float {
        (Float(value) / 255 - mean[channel]) / std[channel]
    }

    /// 3 x 256 table of every normalised value, so the kernels only look up.
    var table: [Float] {
        (0..<3).flatMap { c in (0..<256).map { apply(UInt8($0), channel: c) } }
    }
}

/// Where one training image is cropped from its zero-padded copy, and whether it is mirrored.
public struct CropFlip: Equatable {
    /// Top-left corner of the 32x32 crop inside the 40x40 padded image, each in 0...8.
    public var top: Int
    public var left: Int
    public var flip: Bool

    public init(top: Int, left: Int, flip: Bool) {
        precondition((0...2 * Augmentation.padding).contains(top) && (0...2 * Augmentation.padding).contains(left))
        self.top = top
        self.left = left
        self.flip = flip
    }

    /// The identity: the crop that gives back the unpadded image.
    public static let identity = CropFlip(top: Augmentation.padding, left: Augmentation.padding, flip: false)
}

/// The reference training transform (RandomCrop(32, padding=4), RandomHorizontalFlip(),
/// ToTensor(), Normalize) and the test transform (ToTensor(), Normalize), writing NCHW Float32.
public enum Augmentation {
    public static let padding = 4

    /// One image's random crop and flip: offsets uniform in 0...8, flip with probability 0.5.
    public static func draw(using generator: inout SeededGenerator) -> CropFlip {
        let top = uniform(2 * padding + 1, using: &generator)
        let left = uniform(2 * padding + 1, using: &generator)
        let flip = generator.next() >> 63 == 1
        return CropFlip(top: top, left: left, flip: flip)
    }

    /// Augmented training batch of the images at `indices`, crops drawn from `generator` in order.
    public static func trainingBatch(_ images: ImageSet, indices: [Int], generator: inout SeededGenerator,
                                     normalization: Normalization = .cifar10) -> Batch {
        var crops = [CropFlip]()
        crops.reserveCapacity(indices.count)
        for _ in indices { crops.append(draw(using: &generator)) }
        return batch(images, indices: indices, crops: crops, normalization: normalization)
    }

    /// Test-time batch: normalisation only.
    public static func testBatch(_ images: ImageSet, indices: [Int], normalization: Normalization = .cifar10) -> Batch {
        batch(images, indices: indices, crops: [CropFlip](repeating: .identity, count: indices.count),
              normalization: normalization)
    }

    /// The batch for explicit crops (one per index).
    public static func batch(_ images: ImageSet, indices: [Int], crops: [CropFlip],
                             normalization: Normalization = .cifar10) -> Batch {
        precondition(crops.count == indices.count)
        let plane = Batch.height * Batch.width
        var out = [Float](repeating: 0, count: indices.count * 3 * plane)
        let table = normalization.table
        out.withUnsafeMutableBufferPointer { dst in
            images.pixels.withUnsafeBufferPointer { src in
                table.withUnsafeBufferPointer { lut in
                    for (n, index) in indices.enumerated() {
                        precondition(index >= 0 && index < images.count, "image index \(index) out of range")
                        cropFlipNormalize(src.baseAddress! + index * ImageSet.pixelsPerImage,
                                          dst.baseAddress! + n * 3 * plane, crops[n], lut.baseAddress!)
                    }
                }
            }
        }
        return Batch(images: out, labels: indices.map { Int32(images.labels[$0]) })
    }

    /// One HWC uint8 image to CHW Float32: output (y, x) reads padded (y + top, x' + left) with
    /// x' = 31 - x when flipped; padded pixels outside the image are zero bytes.
    @inline(__always)
    static func cropFlipNormalize(_ image: UnsafePointer<UInt8>, _ out: UnsafeMutablePointer<Float>,
                                  _ crop: CropFlip, _ lut: UnsafePointer<Float>) {
        let size = 32
        let dy = crop.top - padding, dx = crop.left - padding
        // Output columns whose source column lies inside the image.
        for c in 0..<3 {
            let channelLUT = lut + 256 * c
            let zero = channelLUT[0]
            let outPlane = out + c * size * size
            for y in 0..<size {
                let row = outPlane + y * size
                let sy = y + dy
                if sy < 0 || sy >= size {
                    for x in 0..<size { row[x] = zero }
                    continue
                }
                let srcRow = image + sy * size * 3 + c
                if crop.flip {
                    for x in 0..<size {
                        let sx = (size - 1 - x) + dx
                        row[x] = (sx < 0 || sx >= size) ? zero : channelLUT[Int(srcRow[sx * 3])]
                    }
                } else {
                    for x in 0..<size {
                        let sx = x + dx
                        row[x] = (sx < 0 || sx >= size) ? zero : channelLUT[Int(srcRow[sx * 3])]
                    }
                }
            }
        }
    }
}
