"""Data: loaders, leave-one-out split, negative sampling."""
from fedmm.data.raw import DataError, RawData
from fedmm.data.split import FederatedData, ItemSide, UserData, build_split, load_federated, load_item_side

__all__ = ["DataError", "RawData", "FederatedData", "ItemSide", "UserData", "build_split",
           "load_federated", "load_item_side"]
