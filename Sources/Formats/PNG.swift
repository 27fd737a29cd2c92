import CPNG
import Foundation
import Support

/// An 8-bit image with interleaved channels (HWC): 3 for RGB, 1 for grayscale. Triggers and
/// sample images move between PNG files and data sets in this form.
public struct PNGImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    /// 1 (gray) or 3 (RGB).
    public var channels: Int
    /// height x width x channels bytes, rows top to bottom.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(channels == 1 || channels == 3, "PNGImage has 1 or 3 channels, not \(channels)")
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * channels,
                     "\(pixels.count) bytes do not fit \(width)x\(height)x\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// The same image with 3 channels (gray replicated), for code that wants RGB whatever the file held.
    public func rgb() -> PNGImage {
        guard channels == 1 else { return self }
        return PNGImage(width: width, height: height, channels: 3, pixels: pixels.flatMap { [$0, $0, $0] })
    }
}

/// PNG reading and writing through libpng's simplified API (8-bit only; palette images expand).
public enum PNG {
    /// What to do with an alpha channel: refuse the file, or discard alpha (RGB values kept as
    /// stored, not composited).
    public enum Alpha: Sendable {
        case reject, drop
    }

    /// Reads a PNG file into gray or RGB.
    public static func read(path: String, alpha: Alpha = .reject) throws -> PNGImage {
        try decode(try InputFile.bytes(path, what: "PNG file"), path: path, alpha: alpha)
    }

    /// Decodes PNG bytes; `path` only names the source in errors.
    public static func decode(_ bytes: [UInt8], path: String, alpha: Alpha = .reject) throws -> PNGImage {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else {
            throw FileError(path, "not a PNG file (no PNG signature in the first 8 bytes)")
        }
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        let begun = bytes.withUnsafeBytes { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        guard begun != 0 else { throw FileError(path, "invalid PNG: \(message(of: &image))") }

        let sourceFormat = image.format
        if sourceFormat & png_uint_32(PNG_FORMAT_FLAG_LINEAR) != 0 {
            throw FileError(path, "16-bit PNGs are not supported (expected 8 bits per channel)")
        }
        let hasAlpha = sourceFormat & png_uint_32(PNG_FORMAT_FLAG_ALPHA) != 0
        if hasAlpha && alpha == .reject {
            throw FileError(path, "PNG has an alpha channel; expected RGB or grayscale")
        }
        let color = sourceFormat & png_uint_32(PNG_FORMAT_FLAG_COLOR) != 0
        let outputChannels = color ? 3 : 1
        let decodedChannels = outputChannels + (hasAlpha ? 1 : 0)
        // Ask for the alpha channel too when there is one, so dropping it leaves values untouched.
        image.format = (color ? png_uint_32(PNG_FORMAT_FLAG_COLOR) : 0) | (hasAlpha ? png_uint_32(PNG_FORMAT_FLAG_ALPHA) : 0)

        let width = Int(image.width), height = Int(image.height)
        guard width > 0, height > 0, width <= 1 << 15, height <= 1 << 15 else {
            throw FileError(path, "PNG size \(width)x\(height) is out of range")
        }
        var decoded = [UInt8](repeating: 0, count: width * height * decodedChannels)
        let finished = decoded.withUnsafeMutableBytes {
            png_image_finish_read(&image, nil, $0.baseAddress, 0, nil)
        }
        guard finished != 0 else { throw FileError(path, "invalid PNG data: \(message(of: &image))") }
        if hasAlpha {
            decoded = stride(from: 0, to: decoded.count, by: decodedChannels).flatMap { decoded[$0..<($0 + outputChannels)] }
        }
        return PNGImage(width: width, height: height, channels: outputChannels, pixels: decoded)
    }

    /// Encodes an image as PNG bytes.
    public static func encode(_ picture: PNGImage) throws -> [UInt8] {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(picture.width)
        image.height = png_uint_32(picture.height)
        image.format = picture.channels == 3 ? png_uint_32(PNG_FORMAT_FLAG_COLOR) : 0
        defer { png_image_free(&image) }
        var size: png_alloc_size_t = 0
        let sized = picture.pixels.withUnsafeBytes {
            png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, 0, nil)
        }
        guard sized != 0 || size > 0 else { throw PNGWriteError(message: message(of: &image)) }
        var out = [UInt8](repeating: 0, count: Int(size))
        let written = out.withUnsafeMutableBytes { destination in
            picture.pixels.withUnsafeBytes {
                png_image_write_to_memory(&image, destination.baseAddress, &size, 0, $0.baseAddress, 0, nil)
            }
        }
        guard written != 0 else { throw PNGWriteError(message: message(of: &image)) }
        return Array(out[0..<Int(size)])
    }

    /// Writes a PNG file atomically.
    public static func write(_ picture: PNGImage, path: String) throws {
        let bytes: [UInt8]
        do {
            bytes = try encode(picture)
        } catch let error as PNGWriteError {
            throw FileError(path, "cannot encode PNG: \(error.message)")
        }
        try AtomicFile.write(Data(bytes), to: path)
    }

    /// libpng's failure message for encoding, before a path is known.
    struct PNGWriteError: Error { let message: String }

    private static func message(of image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            let text = raw.prefix { $0 != 0 }
            return text.isEmpty ? "libpng gave no message" : String(decoding: text, as: UTF8.self)
        }
    }
}
