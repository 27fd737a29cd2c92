import Foundation

/// A report as a list of blocks, rendered both to self-contained HTML and to Markdown, so the
/// two files always carry the same tables and notes.
public struct ReportDocument {
    public enum Block {
        case heading(level: Int, text: String, anchor: String?)
        case paragraph(String)
        /// Something absent or unreadable in the run folder.
        case note(String)
        case table(headers: [String], rows: [[String]], anchor: String?)
        /// A table folded away in HTML (long per-epoch or per-row listings).
        case foldedTable(summary: String, headers: [String], rows: [[String]])
        case plots([Plot])
        case image(EmbeddedPNG, relativePath: String, caption: String)
        case code(String, language: String)
    }

    public var title: String
    public var blocks: [Block] = []

    public init(title: String) {
        self.title = title
    }

    public var plots: [Plot] {
        blocks.flatMap { block -> [Plot] in
            if case .plots(let plots) = block { return plots }
            return []
        }
    }

    // MARK: HTML

    static let style = """
    body { font-family: Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #f6f6f4; }
    main { max-width: 1200px; margin: 0 auto; padding: 8px 24px 48px; background: #fff; }
    h1 { font-size: 26px; margin: 16px 0 4px; }
    h2 { font-size: 21px; margin-top: 36px; padding-top: 8px; border-top: 2px solid #ddd; }
    h3 { font-size: 17px; margin: 22px 0 8px; }
    nav { font-size: 14px; margin: 8px 0 16px; }
    nav a { margin-right: 14px; color: #0a5ea8; }
    table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
    th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
    th { background: #eef1f5; }
    td:first-child, th:first-child { text-align: left; }
    .figures { display: flex; flex-wrap: wrap; gap: 12px; }
    figure { margin: 0; }
    figure svg { max-width: 100%; height: auto; display: block; }
    figcaption, .caption { font-size: 13px; color: #555; }
    .note { background: #fff4e5; border-left: 4px solid #e69f00; padding: 6px 10px; font-size: 14px; }
    img.samples { image-rendering: pixelated; border: 1px solid #ccc; max-width: 100%; height: auto; }
    pre { background: #f4f4f4; padding: 8px 12px; font-size: 12px; overflow-x: auto; }
    details { margin: 4px 0 12px; font-size: 14px; }
    """

    public var html: String {
        var out = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>\(xmlEscaped(title))</title>
        <style>
        \(Self.style)
        </style>
        </head>
        <body>
        <main>
        <h1>\(xmlEscaped(title))</h1>

        """
        let sections = blocks.compactMap { block -> (String, String)? in
            if case .heading(2, let text, let anchor?) = block { return (text, anchor) }
            return nil
        }
        if !sections.isEmpty {
            out += "<nav>" + sections.map { "<a href=\"#\($0.1)\">\(xmlEscaped($0.0))</a>" }.joined(separator: " ") + "</nav>\n"
        }
        for block in blocks {
            switch block {
            case .heading(let level, let text, let anchor):
                let id = anchor.map { " id=\"\(xmlEscaped($0))\"" } ?? ""
                out += "<h\(level)\(id)>\(xmlEscaped(text))</h\(level)>\n"
            case .paragraph(let text):
                out += "<p>\(xmlEscaped(text))</p>\n"
            case .note(let text):
                out += "<p class=\"note\">\(xmlEscaped(text))</p>\n"
            case .table(let headers, let rows, let anchor):
                out += Self.htmlTable(headers: headers, rows: rows, id: anchor)
            case .foldedTable(let summary, let headers, let rows):
                out += "<details><summary>\(xmlEscaped(summary))</summary>\n"
                out += Self.htmlTable(headers: headers, rows: rows, id: nil)
                out += "</details>\n"
            case .plots(let plots):
                out += "<div class=\"figures\">\n"
                for plot in plots {
                    out += "<figure data-plot=\"\(xmlEscaped(plot.fileName))\">\n\(plot.svg)</figure>\n"
                }
                out += "</div>\n"
            case .image(let image, _, let caption):
                // Shown at three times its size: CIFAR images are 32 pixels wide.
                let width = image.width * 3, height = image.height * 3
                out += "<figure><img class=\"samples\" width=\"\(width)\" height=\"\(height)\" alt=\"\(xmlEscaped(caption))\" "
                out += "src=\"data:image/png;base64,\(image.data.base64EncodedString())\">"
                out += "<figcaption>\(xmlEscaped(caption))</figcaption></figure>\n"
            case .code(let text, _):
                out += "<pre>\(xmlEscaped(text))</pre>\n"
            }
        }
        return out + "</main>\n</body>\n</html>\n"
    }

    private static func htmlTable(headers: [String], rows: [[String]], id: String?) -> String {
        var out = "<table\(id.map { " id=\"\(xmlEscaped($0))\"" } ?? "")>\n<thead><tr>"
        out += headers.map { "<th>\(xmlEscaped($0))</th>" }.joined()
        out += "</tr></thead>\n<tbody>\n"
        for row in rows {
            out += "<tr>" + row.map { "<td>\(xmlEscaped($0))</td>" }.joined() + "</tr>\n"
        }
        return out + "</tbody>\n</table>\n"
    }

    // MARK: Markdown

    /// Markdown with the same blocks; plots are linked as `plotsFolder/<file>.svg`, images by
    /// their path relative to the run folder (report.md lies at the run folder's root).
    public func markdown(plotsFolder: String) -> String {
        var out = "# \(Self.markdownLine(title))\n\n"
        for block in blocks {
            switch block {
            case .heading(let level, let text, _):
                out += String(repeating: "#", count: level) + " \(Self.markdownLine(text))\n\n"
            case .paragraph(let text):
                out += "\(Self.markdownText(text))\n\n"
            case .note(let text):
                out += "> **\(Self.markdownCell(text))**\n\n"
            case .table(let headers, let rows, _):
                out += Self.markdownTable(headers: headers, rows: rows) + "\n"
            case .foldedTable(let summary, let headers, let rows):
                out += "\(Self.markdownLine(summary)):\n\n" + Self.markdownTable(headers: headers, rows: rows) + "\n"
            case .plots(let plots):
                for plot in plots {
                    out += "![\(Self.markdownLine(plot.title))](\(Self.markdownLink(plotsFolder + "/" + plot.fileName)))\n\n"
                }
            case .image(_, let relativePath, let caption):
                out += "![\(Self.markdownLine(caption))](\(Self.markdownLink(relativePath)))\n\n\(Self.markdownText(caption))\n\n"
            case .code(let text, let language):
                // A fence longer than any backtick run inside, so the text cannot close it.
                let longestRun = text.split(whereSeparator: { $0 != "`" }).map(\.count).max() ?? 0
                let fence = String(repeating: "`", count: max(3, longestRun + 1))
                out += "\(fence)\(Self.markdownLine(language).filter { $0 != "`" })\n\(text)\n\(fence)\n\n"
            }
        }
        return out
    }

    /// Text from the run folder (summary.json values, folder names) as literal Markdown: the
    /// characters that start raw HTML, entities, links or images are escaped, so `<script>` or
    /// `<img onerror=...>` shows as text in a Markdown viewer instead of running.
    static func markdownText(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\\", "[", "]", "`": out += "\\" + String(character)
            default: out.append(character)
            }
        }
        return out
    }

    /// `markdownText` on one line (headings, captions, cells end at a newline).
    static func markdownLine(_ text: String) -> String {
        markdownText(text.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " "))
    }

    /// A relative path as a link target: percent-encoded, so it cannot end the link early.
    static func markdownLink(_ path: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "()<>")
        return path.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    private static func markdownCell(_ text: String) -> String {
        markdownLine(text).replacingOccurrences(of: "|", with: "\\|")
    }

    private static func markdownTable(headers: [String], rows: [[String]]) -> String {
        var out = "| " + headers.map(markdownCell).joined(separator: " | ") + " |\n"
        out += "|" + headers.enumerated().map { index, _ in index == 0 ? "---|" : "---:|" }.joined() + "\n"
        for row in rows {
            out += "| " + row.map(markdownCell).joined(separator: " | ") + " |\n"
        }
        return out
    }
}

/// One chart: its SVG text and the file name it is written under (in `plots/`).
public struct Plot {
    public var fileName: String
    public var title: String
    public var svg: String
}
