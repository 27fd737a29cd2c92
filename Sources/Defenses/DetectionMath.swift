import Foundation
import Support

/// Rows of features (one image per row), float64: what the detectors' linear algebra runs on.
public struct FeatureMatrix: Equatable {
    public let rows: Int
    public let columns: Int
    /// Row-major, rows x columns.
    public var values: [Double]

    public init(rows: Int, columns: Int, values: [Double]) {
        precondition(values.count == rows * columns, "a feature matrix holds rows x columns values")
        (self.rows, self.columns, self.values) = (rows, columns, values)
    }

    public init(floats: [Float], columns: Int) {
        self.init(rows: floats.count / max(columns, 1), columns: columns, values: floats.map(Double.init))
    }

    public func row(_ i: Int) -> ArraySlice<Double> { values[(i * columns)..<((i + 1) * columns)] }

    /// The chosen rows, in the given order.
    public func selecting(_ indices: [Int]) -> FeatureMatrix {
        var out: [Double] = []
        out.reserveCapacity(indices.count * columns)
        for i in indices { out += row(i) }
        return FeatureMatrix(rows: indices.count, columns: columns, values: out)
    }

    /// Each row minus the column means.
    public func centred() -> FeatureMatrix {
        var mean = [Double](repeating: 0, count: columns)
        for i in 0..<rows { for j in 0..<columns { mean[j] += values[i * columns + j] } }
        for j in 0..<columns { mean[j] /= Double(max(rows, 1)) }
        var out = values
        for i in 0..<rows { for j in 0..<columns { out[i * columns + j] -= mean[j] } }
        return FeatureMatrix(rows: rows, columns: columns, values: out)
    }

    /// X^T X, columns x columns.
    func gram() -> [Double] {
        var g = [Double](repeating: 0, count: columns * columns)
        for i in 0..<rows {
            let r = i * columns
            for a in 0..<columns where values[r + a] != 0 {
                let x = values[r + a]
                for b in a..<columns { g[a * columns + b] += x * values[r + b] }
            }
        }
        for a in 0..<columns { for b in 0..<a { g[a * columns + b] = g[b * columns + a] } }
        return g
    }

    /// The first `count` right singular vectors (rows of the result, count x columns), largest
    /// singular value first: the principal axes when the matrix is centred. Each vector's sign
    /// makes its largest-magnitude entry positive (numpy's SVD leaves the sign arbitrary).
    /// Subspace iteration on X^T X with Rayleigh-Ritz, until the Ritz pairs are eigenpairs.
    public func topRightSingularVectors(_ count: Int, maxIterations: Int = 2000) -> [[Double]] {
        let k = min(count, columns)
        guard k > 0 else { return [] }
        let g = gram(), n = columns
        // A fixed start: the identity's first k columns plus a little of every axis, so no axis is orthogonal to it.
        var basis: [[Double]] = (0..<k).map { c in
            (0..<n).map { j -> Double in
                let spread = 1e-3 * Double((j * 7 + c * 13) % 11 + 1)
                return j == c ? 1 + spread : spread
            }
        }
        for _ in 0..<maxIterations {
            basis = orthonormalised(basis.map { multiply(g, n, $0) })
            // Rayleigh-Ritz: the k x k projection's eigenvectors order and refine the basis.
            let projected = basis.map { multiply(g, n, $0) }
            var small = [Double](repeating: 0, count: k * k)
            for a in 0..<k { for b in 0..<k { small[a * k + b] = dot(basis[a], projected[b]) } }
            let (values, vectors) = SymmetricEigen.decompose(small, size: k)
            let rotated = rotate(basis, by: vectors), image = rotate(projected, by: vectors)
            basis = rotated
            // Converged when every Ritz pair is an eigenpair of X^T X to near float64 precision.
            var residual = 0.0
            for e in 0..<k {
                let r = (0..<n).map { image[e][$0] - values[e] * rotated[e][$0] }
                residual = max(residual, dot(r, r).squareRoot())
            }
            if residual <= 1e-12 * max(values[0], 1e-300) { break }
        }
        return basis.map { v in
            let largest = v.indices.max { abs(v[$0]) < abs(v[$1]) }!
            return v[largest] < 0 ? v.map { -$0 } : v
        }
    }

    /// Rows projected onto the given axes (rows x axes.count).
    public func projected(onto axes: [[Double]]) -> FeatureMatrix {
        var out: [Double] = []
        out.reserveCapacity(rows * axes.count)
        for i in 0..<rows {
            let r = row(i)
            for axis in axes { out.append(zip(r, axis).reduce(0) { $0 + $1.0 * $1.1 }) }
        }
        return FeatureMatrix(rows: rows, columns: axes.count, values: out)
    }

    private func multiply(_ g: [Double], _ n: Int, _ v: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: n)
        for a in 0..<n {
            var sum = 0.0
            for b in 0..<n { sum += g[a * n + b] * v[b] }
            out[a] = sum
        }
        return out
    }

    /// Row e of the result is sum_b vectors[b, e] * rows[b].
    private func rotate(_ rows: [[Double]], by vectors: [Double]) -> [[Double]] {
        let k = rows.count, n = rows.first?.count ?? 0
        var out = [[Double]](repeating: [Double](repeating: 0, count: n), count: k)
        for e in 0..<k {
            for b in 0..<k {
                let w = vectors[b * k + e]
                for j in 0..<n { out[e][j] += w * rows[b][j] }
            }
        }
        return out
    }

    private func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

    /// Modified Gram-Schmidt; a vector that collapses (rank below k) is replaced by an unused axis.
    private func orthonormalised(_ vectors: [[Double]]) -> [[Double]] {
        var out: [[Double]] = []
        for var v in vectors {
            for attempt in 0...columns {
                for u in out { let d = dot(u, v); for j in v.indices { v[j] -= d * u[j] } }
                let norm = dot(v, v).squareRoot()
                if norm > 1e-12 { out.append(v.map { $0 / norm }); break }
                v = (0..<columns).map { $0 == attempt % columns ? 1 : 0 }
            }
        }
        return out
    }
}

/// Eigenvalues and eigenvectors of a small symmetric matrix (cyclic Jacobi rotations).
enum SymmetricEigen {
    /// Eigenvalues in descending order and the eigenvectors as the columns of a size x size matrix.
    static func decompose(_ matrix: [Double], size n: Int) -> (values: [Double], vectors: [Double]) {
        var a = matrix
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(n, p + 1) { off += a[p * n + q] * a[p * n + q] } }
            if off < 1e-30 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) where a[p * n + q] != 0 {
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] }
        var vectors = [Double](repeating: 0, count: n * n)
        for (column, e) in order.enumerated() { for k in 0..<n { vectors[k * n + column] = v[k * n + e] } }
        return (order.map { a[$0 * n + $0] }, vectors)
    }
}

/// k-means (Lloyd's algorithm) as sklearn's KMeans: k-means++ starts, the best of `restarts`
/// runs by inertia.
public enum KMeans {
    public struct Fit: Equatable {
        public var centroids: [[Double]]
        public var labels: [Int]
        /// Sum of squared distances to the assigned centroid.
        public var inertia: Double
    }

    /// Lloyd's iterations from the given centroids until the assignment stops changing.
    public static func lloyd(_ points: FeatureMatrix, initial: [[Double]], maxIterations: Int = 300) -> Fit {
        var centroids = initial
        var labels: [Int] = []
        for _ in 0..<maxIterations {
            let assigned = (0..<points.rows).map { nearest(points.row($0), centroids).index }
            if assigned == labels { break }
            labels = assigned
            for c in centroids.indices {
                let members = labels.indices.filter { labels[$0] == c }
                guard !members.isEmpty else { continue }  // an emptied cluster keeps its centroid
                var sum = [Double](repeating: 0, count: points.columns)
                for i in members { for (j, x) in points.row(i).enumerated() { sum[j] += x } }
                centroids[c] = sum.map { $0 / Double(members.count) }
            }
        }
        let inertia = (0..<points.rows).reduce(0.0) { $0 + squaredDistance(points.row($1), centroids[labels[$1]]) }
        return Fit(centroids: centroids, labels: labels, inertia: inertia)
    }

    public static func fit(_ points: FeatureMatrix, k: Int, restarts: Int = 10, seed: UInt64) -> Fit {
        precondition(points.rows >= k && k > 0, "k-means needs at least k points")
        var generator = SeededGenerator(seed: seed, stream: "k-means")
        var best: Fit?
        for _ in 0..<max(restarts, 1) {
            let run = lloyd(points, initial: plusPlusStart(points, k: k, generator: &generator))
            if best == nil || run.inertia < best!.inertia { best = run }
        }
        return best!
    }

    /// k-means++: the first centre uniform, each next one drawn with probability proportional to
    /// the squared distance to the nearest centre so far.
    static func plusPlusStart(_ points: FeatureMatrix, k: Int, generator: inout SeededGenerator) -> [[Double]] {
        var centres = [Array(points.row(Int(generator.next(upperBound: UInt64(points.rows)))))]
        while centres.count < k {
            let weights = (0..<points.rows).map { nearest(points.row($0), centres).distance }
            let total = weights.reduce(0, +)
            guard total > 0 else { centres.append(centres[0]); continue }
            let unit = Double(generator.next(upperBound: UInt64(1) << 53)) / Double(UInt64(1) << 53)
            var pick = unit * total
            var chosen = points.rows - 1
            for (i, w) in weights.enumerated() { pick -= w; if pick < 0 { chosen = i; break } }
            centres.append(Array(points.row(chosen)))
        }
        return centres
    }

    static func nearest(_ point: ArraySlice<Double>, _ centroids: [[Double]]) -> (index: Int, distance: Double) {
        var best = (index: 0, distance: Double.infinity)
        for (c, centroid) in centroids.enumerated() {
            let d = squaredDistance(point, centroid)
            if d < best.distance { best = (c, d) }
        }
        return best
    }

    static func squaredDistance(_ a: ArraySlice<Double>, _ b: [Double]) -> Double {
        squaredDistance(a, b[...])
    }

    static func squaredDistance(_ a: ArraySlice<Double>, _ b: ArraySlice<Double>) -> Double {
        var sum = 0.0, j = b.startIndex
        for i in a.indices {
            let d = a[i] - b[j]
            sum += d * d
            j += 1
        }
        return sum
    }
}

public enum ClusterQuality {
    /// Mean silhouette coefficient (Euclidean), sklearn's `silhouette_score`: per point
    /// (b - a) / max(a, b) with a the mean distance to its own cluster's other points and b the
    /// least mean distance to another cluster; 0 for a point alone in its cluster.
    public static func silhouette(_ points: FeatureMatrix, labels: [Int]) -> Double {
        let clusters = Array(Set(labels)).sorted()
        guard clusters.count > 1, points.rows > 0 else { return 0 }
        let slot = labels.map { clusters.firstIndex(of: $0)! }
        var sizes = [Int](repeating: 0, count: clusters.count)
        for c in slot { sizes[c] += 1 }
        var total = 0.0
        for i in 0..<points.rows where sizes[slot[i]] > 1 {
            var sums = [Double](repeating: 0, count: clusters.count)
            let r = points.row(i)
            for j in 0..<points.rows where j != i { sums[slot[j]] += KMeans.squaredDistance(r, points.row(j)).squareRoot() }
            let own = slot[i]
            let a = sums[own] / Double(sizes[own] - 1)
            let b = clusters.indices.filter { $0 != own }.map { sums[$0] / Double(sizes[$0]) }.min()!
            total += (b - a) / max(a, b)
        }
        return total / Double(points.rows)
    }
}
