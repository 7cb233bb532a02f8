import SwarmCore
