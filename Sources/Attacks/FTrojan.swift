import Datasets
import Foundation

/// FTrojan (Wang et al., ECCV 2022), as BackdoorBench's `ftrojann_version` runs it: the image in
/// OpenCV's YCrCb (8-bit, its fixed-point conversion), an orthonormal 2-D DCT over each
/// `window` x `window` block of the chosen channels, `magnitude` added at the chosen frequencies,
/// the inverse DCT, then the float planes cast to bytes as numpy's `astype(uint8)` does on x86
/// (truncation toward zero, wrapping modulo 256 outside [0, 255]) and back to RGB with OpenCV's
/// fixed-point conversion.
///
/// The DCT is linear, so the trigger is the inverse DCT of the bumps alone, added to the plane:
/// exact where the reference's float round trip (DCT then inverse DCT) lands a value a hair
/// below a whole number and truncation takes one off; that is docs/attacks.md's one-grey-level note.
public struct FTrojanTrigger: ImageTrigger, Equatable {
    public static let defaultChannels = [1, 2], defaultWindow = 32, defaultMagnitude = 30.0
    public static let defaultPositions = [[15, 15], [31, 31]]

    /// YCrCb channels bumped: 0 = Y, 1 = Cr, 2 = Cb.
    public let channels: [Int]
    public let window: Int
    public let magnitude: Double
    /// (row, column) frequencies inside each window.
    public let positions: [[Int]]
    /// The added signal of one 32 x 32 plane (row-major).
    let signal: [Double]

    public init(channels: [Int] = defaultChannels, window: Int = defaultWindow, magnitude: Double = defaultMagnitude,
                positions: [[Int]] = defaultPositions) throws {
        guard !channels.isEmpty, channels.allSatisfy({ (0...2).contains($0) }), Set(channels).count == channels.count else {
            throw AttackError.invalidValue(name: "FTrojan channels", value: channels.map(String.init).joined(separator: ","),
                                           allowed: "distinct YCrCb channels among 0 (Y), 1 (Cr), 2 (Cb)")
        }
        guard [1, 2, 4, 8, 16, 32].contains(window) else {
            throw AttackError.invalidValue(name: "FTrojan window", value: "\(window)", allowed: "a divisor of 32 (1, 2, 4, 8, 16 or 32)")
        }
        guard magnitude.isFinite else {
            throw AttackError.invalidValue(name: "FTrojan magnitude", value: "\(magnitude)", allowed: "a finite number")
        }
        guard !positions.isEmpty, positions.allSatisfy({ $0.count == 2 && $0.allSatisfy { (0..<window).contains($0) } }) else {
            throw AttackError.invalidValue(name: "FTrojan positions", value: "\(positions)",
                                           allowed: "(row, column) pairs inside the \(window) x \(window) window")
        }
        self.channels = channels
        self.window = window
        self.magnitude = magnitude
        self.positions = positions
        // cv2.dct's orthonormal DCT-II basis: c(u) cos(pi (2x + 1) u / 2N), c(0) = sqrt(1/N), else sqrt(2/N).
        func basis(_ u: Int, _ x: Int) -> Double {
            let n = Double(window)
            return (u == 0 ? (1 / n).squareRoot() : (2 / n).squareRoot()) * cos(Double.pi * Double(2 * x + 1) * Double(u) / (2 * n))
        }
        let size = ImageSet.width
        signal = (0..<size * size).map { i in
            let (y, x) = (i / size % window, i % size % window)
            return positions.reduce(0) { $0 + magnitude * basis($1[0], y) * basis($1[1], x) }
        }
    }

    public func apply(to set: inout ImageSet, at indices: [Int]) {
        let size = ImageSet.width * ImageSet.height
        for index in indices {
            let base = index * ImageSet.pixelsPerImage
            for p in 0..<size {
                let o = base + p * 3
                var ycc = Self.yCrCb(set.pixels[o], set.pixels[o + 1], set.pixels[o + 2])
                for c in channels {
                    // astype(uint8) on x86: truncate toward zero, keep the low byte.
                    ycc[c] = Int(UInt8(truncatingIfNeeded: Int((Double(ycc[c]) + signal[p]).rounded(.towardZero))))
                }
                let rgb = Self.rgb(ycc)
                for c in 0..<3 { set.pixels[o + c] = UInt8(rgb[c]) }
            }
        }
    }

    // OpenCV's 8-bit conversions (color_yuv: 14-bit fixed point, rounded, saturated).
    static let shift = 14, half = 1 << 13

    static func yCrCb(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> [Int] {
        let (r, g, b) = (Int(r), Int(g), Int(b))
        let y = (r * 4899 + g * 9617 + b * 1868 + half) >> shift
        let cr = ((r - y) * 11682 + (128 << shift) + half) >> shift
        let cb = ((b - y) * 9241 + (128 << shift) + half) >> shift
        return [y, min(max(cr, 0), 255), min(max(cb, 0), 255)]
    }

    static func rgb(_ ycc: [Int]) -> [Int] {
        let (y, cr, cb) = (ycc[0], ycc[1] - 128, ycc[2] - 128)
        let r = y + ((cr * 22987 + half) >> shift)
        let g = y + ((cb * -5636 + cr * -11698 + half) >> shift)
        let b = y + ((cb * 29049 + half) >> shift)
        return [r, g, b].map { min(max($0, 0), 255) }
    }
}
