"""A real OpenLDAP server (Debian's `slapd`) on loopback for a test: its own folder, port and database, people and
groups loaded with `ldapadd`; stopped (and its folder left to the test's tmp) on exit."""

from __future__ import annotations

import contextlib
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port, wait_until
from tests.requirements import need

SUFFIX = "dc=campus,dc=example"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "directory-admin-secret"
SLAPD = "/usr/sbin/slapd"


@dataclass
class Directory:
    url: str
    port: int
    folder: Path

    def person_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{SUFFIX}"

    def group_dn(self, name: str) -> str:
        return f"cn={name},ou=groups,{SUFFIX}"

    def ldif(self, text: str, command: str = "ldapadd") -> None:
        """Apply LDIF `text` as the directory's administrator."""
        subprocess.run(
            [command, "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=textwrap.dedent(text),
            text=True,
            check=True,
            capture_output=True,
        )

    def add_person(self, uid: str, password: str) -> None:
        self.ldif(
            f"""\
            dn: {self.person_dn(uid)}
            objectClass: inetOrgPerson
            uid: {uid}
            cn: {uid.title()}
            sn: {uid.title()}
            userPassword: {password}
            """
        )

    def add_group(self, name: str, members: list[str]) -> None:
        lines = "".join(f"member: {self.person_dn(uid)}\n" for uid in members) or f"member: {ADMIN_DN}\n"
        self.ldif(f"dn: {self.group_dn(name)}\nobjectClass: groupOfNames\ncn: {name}\n{lines}")

    def set_members(self, name: str, members: list[str]) -> None:
        lines = "".join(f"member: {self.person_dn(uid)}\n" for uid in members) or f"member: {ADMIN_DN}\n"
        self.ldif(f"dn: {self.group_dn(name)}\nchangetype: modify\nreplace: member\n{lines}", "ldapmodify")


@contextlib.contextmanager
def running_slapd(folder: Path) -> Iterator[Directory]:
    need("slapd")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir(exist_ok=True)
    config = folder / "slapd.conf"
    config.write_text(
        textwrap.dedent(
            f"""\
            include /etc/ldap/schema/core.schema
            include /etc/ldap/schema/cosine.schema
            include /etc/ldap/schema/inetorgperson.schema
            modulepath /usr/lib/ldap
            moduleload back_mdb
            pidfile {folder}/slapd.pid
            database mdb
            maxsize 16777216
            suffix "{SUFFIX}"
            rootdn "{ADMIN_DN}"
            rootpw {ADMIN_PASSWORD}
            directory {folder}/db
            access to attrs=userPassword by anonymous auth by * none
            access to * by * read
            """
        )
    )
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    with open(folder / "slapd.log", "wb") as log:
        process = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(config), "-h", f"{url}/"], stdout=log, stderr=subprocess.STDOUT
        )
    directory = Directory(url, port, folder)
    try:
        wait_until(lambda: process.poll() is not None or _answers(url), 20, "slapd to answer", every=0.1)
        assert process.poll() is None, (folder / "slapd.log").read_text()
        directory.ldif(
            f"""\
            dn: {SUFFIX}
            objectClass: dcObject
            objectClass: organization
            o: Campus
            dc: campus

            dn: ou=people,{SUFFIX}
            objectClass: organizationalUnit
            ou: people

            dn: ou=groups,{SUFFIX}
            objectClass: organizationalUnit
            ou: groups
            """
        )
        yield directory
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    result = subprocess.run(
        ["ldapsearch", "-x", "-H", url, "-b", "", "-s", "base", "namingContexts"], capture_output=True, timeout=5
    )
    return result.returncode == 0
