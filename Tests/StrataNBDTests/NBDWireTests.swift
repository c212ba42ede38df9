import Testing
@testable import StrataNBD
