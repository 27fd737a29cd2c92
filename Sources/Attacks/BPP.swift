import Datasets

/// BPP's colour-depth squeeze (Wang et al., CVPR 2022), as BackdoorBench's `attack/bpp.py`:
/// each value to `round(x / 255 * (n - 1)) / (n - 1) * 255` (n = `squeezeNum` levels), or with
/// `dithering` Floyd-Steinberg error diffusion (row by row, the error split 7/16, 1/16, 5/16,
/// 3/16 to the right, lower right, lower and lower left pixels, all channels at once) rounded to
/// whole numbers. Training batches use the float values; stored images (test set, export) are
/// truncated to bytes as the reference's ToPILImage does.
public struct BPPSqueeze: ImageTrigger, Equatable {
    public static let defaultSqueezeNum = 8
    public let squeezeNum: Int
    public let dithering: Bool

    public init(squeezeNum: Int = defaultSqueezeNum, dithering: Bool = false) throws {
        guard (2...256).contains(squeezeNum) else {
            throw AttackError.invalidValue(name: "squeeze num", value: "\(squeezeNum)", allowed: "an integer in 2...256 (colour levels)")
        }
        self.squeezeNum = squeezeNum
        self.dithering = dithering
    }

    /// One image's planes (CHW, 0-255) squeezed.
    public func squeeze(_ planes: [Double]) -> [Double] {
        let levels = Double(squeezeNum - 1)
        guard dithering else {
            // float32 as the reference's tensors; never a tie for byte inputs, so the rounding rule does not matter.
            return planes.map { Double((Float($0) / 255 * Float(levels)).rounded(.toNearestOrEven) / Float(levels) * 255) }
        }
        var image = planes
        let (h, w, plane) = (ImageSet.height, ImageSet.width, ImageSet.height * ImageSet.width)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    let i = c * plane + y * w + x
                    let old = image[i]
                    let new = (old / 255 * levels).rounded(.toNearestOrEven) / levels * 255
                    let error = old - new
                    image[i] = new
                    if x + 1 < w { image[i + 1] += error * 0.4375 }
                    if y + 1 < h && x + 1 < w { image[i + w + 1] += error * 0.0625 }
                    if y + 1 < h { image[i + w] += error * 0.3125 }
                    if x >= 1 && y + 1 < h { image[i + w - 1] += error * 0.1875 }
                }
            }
        }
        return image.map { $0.rounded(.toNearestOrEven) }
    }

    public func apply(to set: inout ImageSet, at indices: [Int]) {
        ImagePlanes.map(&set, at: indices, rule: .towardZero, squeeze)
    }
}
