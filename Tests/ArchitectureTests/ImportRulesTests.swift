import Foundation
import XCTest

/// The module boundaries of docs/architecture: only the oneDNN backend touches oneDNN, no library
/// target depends on a backend implementation (they see the seam), and Package.swift declares
/// exactly the modules each target imports.
final class ImportRulesTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// Modules of the toolchain, not of the package graph.
    let toolchain: Set<String> = ["Foundation", "FoundationNetworking", "Glibc", "Dispatch", "XCTest"]

    /// Target name -> declared dependencies (products by their module name), from Package.swift.
    func declaredTargets() throws -> [String: Set<String>] {
        let manifest = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let target = try NSRegularExpression(pattern: #"\.(target|executableTarget)\(\s*name:\s*"(\w+)"(?:,\s*dependencies:\s*\[([^\]]*)\])?"#)
        let dependency = try NSRegularExpression(pattern: #"(?:\.product\(name:\s*)?"(\w+)""#)
        var out: [String: Set<String>] = [:]
        for match in target.matches(in: manifest, range: NSRange(manifest.startIndex..., in: manifest)) {
            let name = String(manifest[Range(match.range(at: 2), in: manifest)!])
            var deps = Set<String>()
            if let r = Range(match.range(at: 3), in: manifest) {
                let list = String(manifest[r])
                for d in dependency.matches(in: list, range: NSRange(list.startIndex..., in: list)) {
                    deps.insert(String(list[Range(d.range(at: 1), in: list)!]))
                }
                // `.product(name: "X", package: "y")`: the package name is not a module (unless
                // the product has the same name, as Yams's).
                let products = try NSRegularExpression(pattern: #"\.product\(name:\s*"(\w+)""#)
                let productNames = Set(products.matches(in: list, range: NSRange(list.startIndex..., in: list))
                    .map { String(list[Range($0.range(at: 1), in: list)!]) })
                let packages = try NSRegularExpression(pattern: #"package:\s*"([\w-]+)""#)
                for p in packages.matches(in: list, range: NSRange(list.startIndex..., in: list)) {
                    let package = String(list[Range(p.range(at: 1), in: list)!])
                    if !productNames.contains(package) { deps.remove(package) }
                }
            }
            out[name] = deps
        }
        return out
    }

    /// Modules imported by the Swift files of Sources/<target> (Tests/<target> for test helpers).
    func imports(of target: String) throws -> Set<String> {
        var folder = root.appendingPathComponent("Sources/" + target)
        if !FileManager.default.fileExists(atPath: folder.path) { folder = root.appendingPathComponent("Tests/" + target) }
        let files = try FileManager.default.subpathsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".swift") }
        var out = Set<String>()
        for file in files {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ")
                if let i = words.firstIndex(of: "import"), i + 1 < words.count, words[..<i].allSatisfy({ $0.hasPrefix("@") }) {
                    out.insert(String(words[i + 1]))
                }
            }
        }
        return out.subtracting(toolchain)
    }

    func testPackageDependenciesAreExactlyTheImports() throws {
        let targets = try declaredTargets()
        XCTAssertGreaterThan(targets.count, 8, "Package.swift parsed")
        for (name, declared) in targets.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(try imports(of: name), declared, "Sources/\(name): imports vs Package.swift dependencies")
        }
    }

    func testOnlyTheOneDNNBackendImportsOneDNNAndOnlyTheCLIChoosesABackend() throws {
        for name in try declaredTargets().keys {
            let imported = try imports(of: name)
            if name != "OneDNNBackend" { XCTAssertFalse(imported.contains("CDNNL"), "Sources/\(name) imports CDNNL") }
            if name != "BackdoorCLI" && name != "TestSupport" {
                XCTAssertFalse(imported.contains("OneDNNBackend"), "Sources/\(name) imports a backend implementation")
            }
        }
        XCTAssertEqual(try imports(of: "Backend"), [], "the seam depends on nothing")
    }
}
