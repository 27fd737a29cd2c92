/// Bad input to an attack, worded so the message names the value and what is allowed.
public enum AttackError: Error, Equatable, CustomStringConvertible {
    /// A setting outside its range, e.g. `invalidValue(name: "poison rate", value: "1.5", allowed: "a number in [0, 1]")`.
    case invalidValue(name: String, value: String, allowed: String)
    /// A trigger whose pattern, mask or kind cannot be used.
    case invalidTrigger(String)

    public var description: String {
        switch self {
        case let .invalidValue(name, value, allowed): return "\(name) \(value) is not allowed; expected \(allowed)"
        case let .invalidTrigger(message): return "invalid trigger: \(message)"
        }
    }
}
