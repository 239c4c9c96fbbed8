from swaplab.models.identity.module import IdentityNetModule
from swaplab.models.identity.verification import verification_report

__all__ = ["IdentityNetModule", "verification_report"]
