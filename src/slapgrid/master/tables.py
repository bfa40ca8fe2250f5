"""The master's SQL tables (SQLAlchemy declarative models) and the states they hold.

Plain data only: what the rows mean is decided by the transitions in `storage` and
`instances`, and what nodes and users see of them by `answers`.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from slapgrid.slap.documents import AVAILABLE, DESTROYED, STARTED

DEFAULT_SOFTWARE_TYPE = "default"
FREE, BUSY = "free", "busy"


class Base(DeclarativeBase):
    pass


class Reported:
    """The last status a node reported for the row (`text`), since when, and when last."""

    status_text: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[int | None] = mapped_column(BigInteger)
    status_at: Mapped[int | None] = mapped_column(BigInteger)


class MetaRow(Base):
    """`schema_version`: what releases before migrations check (`migrations/` sets it)."""

    __tablename__ = "meta"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ComputerRow(Reported, Base):
    __tablename__ = "computer"
    reference: Mapped[str] = mapped_column(String(255), primary_key=True)
    address: Mapped[str | None] = mapped_column(String(255))
    netmask: Mapped[str | None] = mapped_column(String(255))
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    last_contact: Mapped[int | None] = mapped_column(BigInteger)  # µs, its node's last fetch


class PartitionRow(Reported, Base):
    __tablename__ = "partition"
    __table_args__ = (
        UniqueConstraint("computer", "reference"),
        UniqueConstraint("title", "requested_by"),
        # an instance tree's members, the instances a partition requested: never a scan
        Index("ix_partition_requested_by", "requested_by"),
        Index("ix_partition_requester", "requester_computer", "requester_partition"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(ForeignKey("computer.reference", ondelete="CASCADE"))
    reference: Mapped[str] = mapped_column(String(255))
    slap_state: Mapped[str] = mapped_column(String(16), default=FREE)
    guid: Mapped[str | None] = mapped_column(String(64), unique=True)
    title: Mapped[str | None] = mapped_column(String(255))
    requested_by: Mapped[str] = mapped_column(String(255), default="")  # root title, "" = root
    owner: Mapped[str | None] = mapped_column(String(255))  # a root's user; NULL: trusted
    requester_computer: Mapped[str | None] = mapped_column(String(255))
    requester_partition: Mapped[str | None] = mapped_column(String(255))
    software_release: Mapped[str | None] = mapped_column(Text)
    software_type: Mapped[str | None] = mapped_column(String(255))
    parameters: Mapped[str | None] = mapped_column(Text)  # instance XML
    filter: Mapped[str | None] = mapped_column(Text)  # instance XML
    connection: Mapped[str | None] = mapped_column(Text)  # instance XML
    requested_state: Mapped[str] = mapped_column(String(16), default=DESTROYED)
    timestamp: Mapped[int] = mapped_column(BigInteger, default=0)
    addresses: Mapped[list[AddressRow]] = relationship(
        cascade="all, delete-orphan", order_by="AddressRow.id"
    )

    @property
    def root_title(self) -> str:
        return self.requested_by or self.title or ""


class AddressRow(Base):
    """A partition address; one with a gateway is a routed tap address (`full_ip_list`)."""

    __tablename__ = "partition_address"
    id: Mapped[int] = mapped_column(primary_key=True)
    partition_id: Mapped[int] = mapped_column(
        ForeignKey("partition.id", ondelete="CASCADE"), index=True
    )
    interface: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(255))
    netmask: Mapped[str] = mapped_column(String(255), default="")
    gateway: Mapped[str] = mapped_column(String(255), default="")
    network: Mapped[str] = mapped_column(String(255), default="")


class SoftwareRow(Reported, Base):
    __tablename__ = "software_installation"
    __table_args__ = (UniqueConstraint("computer", "url"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(ForeignKey("computer.reference", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    requested_state: Mapped[str] = mapped_column(String(16), default=AVAILABLE)


class SharedRow(Reported, Base):
    """A shared ("slave") instance: hosted by a partition, listed in its slave_instance_list."""

    __tablename__ = "shared_instance"
    __table_args__ = (
        UniqueConstraint("title", "requested_by"),
        Index("ix_shared_instance_requested_by", "requested_by"),
        Index("ix_shared_instance_requester", "requester_computer", "requester_partition"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    owner: Mapped[str | None] = mapped_column(String(255))  # a root's user; NULL: trusted
    requester_computer: Mapped[str | None] = mapped_column(String(255))
    requester_partition: Mapped[str | None] = mapped_column(String(255))
    software_release: Mapped[str] = mapped_column(Text)
    software_type: Mapped[str] = mapped_column(String(255))
    parameters: Mapped[str] = mapped_column(Text)
    filter: Mapped[str] = mapped_column(Text)
    connection: Mapped[str | None] = mapped_column(Text)
    requested_state: Mapped[str] = mapped_column(String(16), default=STARTED)
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("partition.id", ondelete="SET NULL"), index=True
    )
    timestamp: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def root_title(self) -> str:
        return self.requested_by or self.title

    @property
    def listed(self) -> bool:
        return self.host_id is not None and self.requested_state == STARTED


class _ComputerEvent:
    """Something a computer sent, kept with when it arrived; gone with the computer."""

    id: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(
        ForeignKey("computer.reference", ondelete="CASCADE"), index=True
    )
    received_at: Mapped[int] = mapped_column(BigInteger)


class UsageRow(_ComputerEvent, Base):
    __tablename__ = "usage_report"
    document: Mapped[str] = mapped_column(Text)


class BangRow(_ComputerEvent, Base):
    __tablename__ = "computer_bang"
    message: Mapped[str] = mapped_column(Text)


class TokenRow(Base):
    """A one-time registration token (`master token create`): only its SHA-256 is kept."""

    __tablename__ = "registration_token"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    computer: Mapped[str] = mapped_column(String(255))  # may not be formatted yet: no key
    created_at: Mapped[int] = mapped_column(BigInteger)  # µs
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class CredentialRow(Base):
    """A certificate the master issued: who to, when, and (partitions) for which instance.

    Certificates are public; no private key is kept here. A partition's current certificate
    is its newest row for the instance it holds; authorization may refuse older serials.
    """

    __tablename__ = "credential"
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # hex
    kind: Mapped[str] = mapped_column(String(16))
    computer: Mapped[str | None] = mapped_column(String(255), index=True)
    partition: Mapped[str | None] = mapped_column(String(255))
    user: Mapped[str | None] = mapped_column(String(255))
    instance: Mapped[str | None] = mapped_column(String(64))  # the partition's guid then
    certificate: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[int] = mapped_column(BigInteger)
    not_after: Mapped[int] = mapped_column(BigInteger)
