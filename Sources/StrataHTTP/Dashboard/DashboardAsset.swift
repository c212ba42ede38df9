// The dashboard's files, compiled into the binary: no file is read at run time, nothing is
// fetched from another host, and no framework is used (plain HTML, CSS and JavaScript drawing
// with SVG and canvas). The page polls /api/v1 every two seconds.

/// One file of the dashboard.
public enum DashboardAsset: Equatable, Sendable {
    case page
    case style
    case script

    /// The asset a path names, or nil.
    init?(path: String) {
        switch path {
        case "/", "/index.html": self = .page
        case "/dashboard.css": self = .style
        case "/dashboard.js": self = .script
        default: return nil
        }
    }

    var contentType: String {
        switch self {
        case .page: return "text/html; charset=utf-8"
        case .style: return "text/css; charset=utf-8"
        case .script: return "text/javascript; charset=utf-8"
        }
    }

    var body: [UInt8] {
        switch self {
        case .page: return Array(DashboardFiles.page.utf8)
        case .style: return Array(DashboardFiles.style.utf8)
        case .script: return Array(DashboardFiles.script.utf8)
        }
    }
}
