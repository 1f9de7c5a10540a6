"""One APIRouter per module; api.main includes every module here that defines `router`."""
