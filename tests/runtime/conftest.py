# The job store on SQLite and on the real PostgreSQL, as the store's own tests have it (the Ray dispatcher's
# store calls are tested on both).
from tests.jobs.conftest import store  # noqa: F401
