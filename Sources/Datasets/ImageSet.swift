/// CIFAR-sized images as the reference code holds them: uint8, N x 32 x 32 x 3 (HWC, RGB),
/// with integer labels. Triggers and poisoning work on this layout, pixel-exact with numpy.
public struct ImageSet: Equatable {
    public static let height = 32, width = 32, channels = 3
    public static let pixelsPerImage = height * width * channels

    public var pixels: [UInt8]
    public var labels: [Int]
    public var count: Int { labels.count }

    public init(pixels: [UInt8], labels: [Int]) {
        precondition(pixels.count == labels.count * Self.pixelsPerImage, "pixel count does not match labels")
        self.pixels = pixels
        self.labels = labels
    }

    /// The images at `indices`, in that order.
    public func subset(_ indices: [Int]) -> ImageSet {
        var out = [UInt8]()
        out.reserveCapacity(indices.count * Self.pixelsPerImage)
        for i in indices {
            out.append(contentsOf: pixels[i * Self.pixelsPerImage..<(i + 1) * Self.pixelsPerImage])
        }
        return ImageSet(pixels: out, labels: indices.map { labels[$0] })
    }

    /// The images of `sets`, one set after the other (e.g. clean and poisoned images).
    public init(concatenating sets: [ImageSet]) {
        var pixels = [UInt8]()
        pixels.reserveCapacity(sets.reduce(0) { $0 + $1.pixels.count })
        for set in sets { pixels.append(contentsOf: set.pixels) }
        self.init(pixels: pixels, labels: sets.flatMap(\.labels))
    }

    /// Pixels of image `index` (HWC).
    public func image(_ index: Int) -> ArraySlice<UInt8> {
        pixels[index * Self.pixelsPerImage..<(index + 1) * Self.pixelsPerImage]
    }
}

/// A batch as the compute core consumes it: normalised Float32 in plain NCHW, labels as Int32.
/// The core reorders it into its blocked layout at the edge.
public struct Batch {
    public var images: [Float]
    public var labels: [Int32]
    public var count: Int { labels.count }
    public static let channels = 3, height = 32, width = 32

    public init(images: [Float], labels: [Int32]) {
        precondition(images.count == labels.count * Self.channels * Self.height * Self.width)
        self.images = images
        self.labels = labels
    }
}
