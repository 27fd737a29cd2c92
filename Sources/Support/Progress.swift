import Foundation

/// A one-line progress bar with rate and ETA on standard error. Silent when `quiet` or when
/// standard error is not a terminal (then it prints nothing until `finish`), so logs stay clean.
public final class ProgressBar {
    private let total: Int
    private let label: String
    private let quiet: Bool
    private let isTerminal: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var current = 0
    public var suffix = ""

    public init(total: Int, label: String, quiet: Bool = false) {
        self.total = max(total, 1)
        self.label = label
        self.quiet = quiet
        self.isTerminal = isatty(STDERR_FILENO) != 0
    }

    public func advance(by amount: Int = 1) {
        update(to: current + amount)
    }

    public func update(to value: Int) {
        current = min(value, total)
        guard !quiet, isTerminal else { return }
        let now = Date()
        if now.timeIntervalSince(lastDraw) < 0.2 && current < total { return }
        lastDraw = now
        draw(now: now)
    }

    public func finish() {
        guard !quiet, isTerminal else { return }
        draw(now: Date())
        FileHandle.standardError.write(Data("\n".utf8))
    }

    private func draw(now: Date) {
        let elapsed = now.timeIntervalSince(start)
        let fraction = Double(current) / Double(total)
        let width = 28
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let eta = current > 0 ? elapsed / Double(current) * Double(total - current) : 0
        let line = "\r\(label) [\(bar)] \(current)/\(total) \(Self.clock(elapsed)) eta \(Self.clock(eta)) \(suffix)"
        FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
    }

    public static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                         : String(format: "%d:%02d", s / 60, s % 60)
    }
}
