"""IPT — intrinsic prompt tuning (Qin et al.): MSF and IST. Paper code arrives in its own issue."""
