import Datasets
import Formats

/// A picture for people: clean images in the top row, the same images poisoned below, each
/// enlarged (nearest neighbour) so a 3x3 trigger is visible, on a white background.
public enum ExampleGrid {
    public static let scale = 3, gap = 2

    public static func make(clean: ImageSet, poisoned: ImageSet, indices: [Int]) -> PNGImage {
        let cell = 32 * scale
        let width = gap + indices.count * (cell + gap), height = gap + 2 * (cell + gap)
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        for (column, index) in indices.enumerated() {
            for (row, set) in [clean, poisoned].enumerated() {
                let image = set.image(index)
                let left = gap + column * (cell + gap), top = gap + row * (cell + gap)
                for y in 0..<cell {
                    for x in 0..<cell {
                        let source = image.startIndex + ((y / scale) * 32 + x / scale) * 3
                        let target = ((top + y) * width + left + x) * 3
                        pixels[target] = image[source]
                        pixels[target + 1] = image[source + 1]
                        pixels[target + 2] = image[source + 2]
                    }
                }
            }
        }
        return PNGImage(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// Up to `limit` poisoned indices, spread over the set, to show.
    public static func sampleIndices(_ poisoned: [Int], limit: Int = 8) -> [Int] {
        guard poisoned.count > limit else { return poisoned }
        return (0..<limit).map { poisoned[$0 * poisoned.count / limit] }
    }
}
