"""A small store FAQ in English, Chinese and Japanese, with questions and their answers."""

from __future__ import annotations

DOCUMENTS: dict[str, tuple[str, str]] = {
    "returns": (
        "Returns",
        (
            "You can return unused items within 30 days of purchase with the "
            "original receipt. Refunds are issued to the original payment method "
            "within 5 business days."
        ),
    ),
    "shipping": (
        "Shipping",
        (
            "Standard shipping takes 3 to 5 business days. Express shipping "
            "delivers the next day for orders placed before 2 pm. Shipping is free "
            "on orders over $50."
        ),
    ),
    "store-hours": (
        "Store hours",
        (
            "Our flagship store on Market Street opens at 9 am and closes at 9 pm "
            "Monday to Saturday. On Sundays we open from 10 am to 6 pm."
        ),
    ),
    "membership": (
        "Acme Club",
        (
            "Acme Club members earn one point per dollar spent. 500 points can be "
            "redeemed for a $10 voucher. Membership is free."
        ),
    ),
    "gift-cards": (
        "Gift cards",
        (
            "Gift cards are available from $10 to $500. They never expire and can "
            "be used online and in stores. Lost gift cards cannot be replaced."
        ),
    ),
    "warranty": (
        "Warranty",
        (
            "All electronics come with a two-year warranty covering manufacturing "
            "defects. Accidental damage such as cracked screens is not covered."
        ),
    ),
    "payment": (
        "Payment",
        (
            "We accept Visa, Mastercard, American Express, PayPal and Apple Pay. "
            "Cash is accepted in stores only. Installment plans are available for "
            "purchases over $300."
        ),
    ),
    "price-match": (
        "Price match",
        (
            "If you find a lower price at a major competitor within 14 days, we "
            "will refund the difference. Marketplace sellers and clearance sales "
            "are excluded."
        ),
    ),
    "tracking": (
        "Order tracking",
        (
            "You can track your order with the tracking number in your confirmation"
            " email. Log in to your account and open Order History to see the "
            "delivery status."
        ),
    ),
    "cancel": (
        "Cancelling an order",
        (
            "Orders can be cancelled within one hour of purchase from your account "
            "page. After that the order is being packed and you need to return it "
            "after delivery."
        ),
    ),
    "international": (
        "International",
        (
            "We ship to Canada, the UK and most EU countries. International "
            "delivery takes 7 to 14 days and customs duties are paid by the "
            "customer."
        ),
    ),
    "pickup": (
        "Store pickup",
        (
            "Buy online and pick up in store: your order is ready within two hours."
            " Bring your ID and order number to the service desk."
        ),
    ),
    "privacy": (
        "Privacy",
        (
            "We never sell your personal data. You can request a copy or deletion "
            "of your data by emailing privacy@acme.example."
        ),
    ),
    "parking": (
        "Parking",
        (
            "Customers get two hours of free parking in the garage under the Market"
            " Street store. Validate your ticket at the checkout."
        ),
    ),
    "repairs": (
        "Repairs",
        (
            "Our repair service fixes phones, tablets and laptops. Screen "
            "replacement takes about one hour; battery replacement takes 30 "
            "minutes."
        ),
    ),
    "zh-returns": (
        "退货政策",
        "未使用的商品自购买之日起七天内可以无理由退货，请携带购物小票。退款将在三到五个工作日内退回原支付账户。",
    ),
    "zh-shipping": (
        "配送时间",
        "普通快递一般三到五天送达，偏远地区可能需要七天。同城急送当天下单当天送达，运费十五元。",
    ),
    "zh-hours": (
        "营业时间",
        "南京路旗舰店每天上午十点开门，晚上十点关门。春节期间营业时间另行通知。",
    ),
    "zh-points": (
        "会员积分",
        "会员每消费一元累积一个积分，一百积分可以抵扣一元现金。积分有效期为两年，过期自动清零。",
    ),
    "zh-invoice": (
        "发票",
        "购买商品后可以在订单详情页申请电子发票，增值税专用发票需要提供公司税号和开户银行信息。",
    ),
    "zh-coupons": (
        "优惠券",
        "优惠券不能与其他促销活动同时使用，每个订单限用一张。过期的优惠券无法恢复。",
    ),
    "zh-warranty": (
        "保修",
        "家电产品享受一年免费保修，人为损坏和进水不在保修范围内。保修期内请保留购买凭证。",
    ),
    "zh-payment": (
        "支付方式",
        "我们支持微信支付、支付宝和银联卡付款，门店也可以使用现金。分期付款仅限信用卡。",
    ),
    "zh-address": (
        "修改地址",
        "订单发货前可以在我的订单中修改收货地址，发货后请联系快递公司改派。",
    ),
    "zh-hotline": (
        "客服电话",
        "客服热线每天早上八点到晚上九点提供人工服务，其他时间可以留言，我们会尽快回电。",
    ),
    "zh-install": (
        "安装服务",
        "购买空调和热水器可以预约免费上门安装，安装师傅会在四十八小时内联系您。",
    ),
    "zh-trade-in": (
        "以旧换新",
        "旧手机可以折价换购新手机，折价金额根据手机型号和成色评估，最高可抵两千元。",
    ),
    "ja-returns": (
        "返品",
        "商品到着後八日以内であれば返品できます。開封済みの食品は返品できません。",
    ),
    "ja-hours": (
        "営業時間",
        "東京店の営業時間は午前十時から午後八時までです。定休日は毎週水曜日です。",
    ),
    "ja-shipping": (
        "送料",
        "五千円以上のご注文で送料無料になります。沖縄と離島は別途送料がかかります。",
    ),
}

QUESTIONS: list[tuple[str, str]] = [
    ("Can I get a refund if I return something?", "returns"),
    ("How long does standard shipping take?", "shipping"),
    ("What time do you open on Sunday?", "store-hours"),
    ("How many points do I need for a voucher?", "membership"),
    ("Do gift cards expire?", "gift-cards"),
    ("My screen cracked, is that covered by the warranty?", "warranty"),
    ("Can I pay with PayPal?", "payment"),
    ("Will you match a lower price from a competitor?", "price-match"),
    ("How do I track my order?", "tracking"),
    ("I want to cancel my order", "cancel"),
    ("Do you ship to Canada?", "international"),
    ("Is parking free?", "parking"),
    ("How long does a battery replacement take?", "repairs"),
    ("退货要带小票吗", "zh-returns"),
    ("快递几天能到", "zh-shipping"),
    ("旗舰店几点关门", "zh-hours"),
    ("积分怎么抵扣现金", "zh-points"),
    ("怎么开增值税发票", "zh-invoice"),
    ("两张优惠券可以一起用吗", "zh-coupons"),
    ("空调安装要钱吗", "zh-install"),
    ("能用支付宝付款吗", "zh-payment"),
    ("发货前能改地址吗", "zh-address"),
    ("旧手机能抵多少钱", "zh-trade-in"),
    ("返品は何日以内ですか", "ja-returns"),
    ("送料無料はいくらからですか", "ja-shipping"),
    ("東京店は何時まで営業していますか", "ja-hours"),
]
