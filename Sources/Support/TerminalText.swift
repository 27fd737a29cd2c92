/// Text from a file shown on a terminal: control characters (escape sequences, NUL, newlines,
/// C1 controls) and bidirectional overrides are written as `\u{...}`, so a hostile tensor name
/// cannot move the cursor, rewrite earlier lines or reorder what is shown.
public enum TerminalText {
    public static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            let value = scalar.value
            let isControl = value < 0x20 || (0x7F...0x9F).contains(value)
            let isBidi = (0x202A...0x202E).contains(value) || (0x2066...0x2069).contains(value) || value == 0x200E || value == 0x200F
            if scalar == "\\" {
                out += "\\\\"
            } else if isControl || isBidi {
                out += "\\u{" + String(value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
