"""rcbundle's own tests: no lab, no app of ours; the integration tests start a real redis-server."""
