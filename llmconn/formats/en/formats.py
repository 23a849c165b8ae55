"""One date format across the admin (FORMAT_MODULE_PATH): "21 Nov 2026, 19:02" for every
timestamp, list columns and change pages alike (Django's en formats mix "Nov. 21, 2026, 7:02
p.m." with ISO dates). https://docs.djangoproject.com/en/5.2/topics/i18n/formatting/#creating-custom-format-files
"""

DATE_FORMAT = "j M Y"
DATETIME_FORMAT = "j M Y, H:i"
SHORT_DATE_FORMAT = "j M Y"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
TIME_FORMAT = "H:i"
MONTH_DAY_FORMAT = "j M"
YEAR_MONTH_FORMAT = "M Y"
