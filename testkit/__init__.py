"""What the tests and the benchmarks both start: provider stand-ins on real sockets
(`testkit.provider_servers`), a throwaway PostgreSQL cluster (`testkit.postgres`) and a chunked
sender (`testkit.chunked_sender`). Like `cluster/`, it lives beside the package and is not
installed: the tests (pytest puts the repository on the path) and the benchmarks (they add it)
import it, and no benchmark imports the tests."""
